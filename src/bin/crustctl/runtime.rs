//! `crustctl pods`, `containers` and `status`, through CRI (plus the admin socket for the
//! configuration in effect).

use clap::Subcommand;
use cri_api::v1::{
    ContainerState, ContainerStatusRequest, ListContainersRequest, ListPodSandboxRequest, PodSandboxState,
    PodSandboxStatusRequest, StatusRequest, VersionRequest,
};
use crust::server::admin::Request;
use serde_json::{Value, json};

use crate::output::{age, print, print_json, short_id};
use crate::{CtlError, Ctx, Output, client};

#[derive(Subcommand)]
pub enum PodCmd {
    /// Lists pod sandboxes.
    #[command(alias = "list")]
    Ls,
    /// Shows a pod sandbox's status.
    Inspect { id: String },
}

#[derive(Subcommand)]
pub enum ContainerCmd {
    /// Lists containers (running ones unless --all).
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        all: bool,
    },
    /// Shows a container's status.
    Inspect { id: String },
    /// Prints a container's log (the CRI log file, messages only).
    Logs {
        id: String,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
    },
}

fn info_json(info: &std::collections::HashMap<String, String>) -> Value {
    info.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                serde_json::from_str(v).unwrap_or(Value::String(v.clone())),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

pub async fn pods(ctx: &Ctx, cmd: PodCmd) -> Result<(), CtlError> {
    let mut c = client::runtime(ctx).await?;
    match cmd {
        PodCmd::Ls => {
            let items = c
                .list_pod_sandbox(ListPodSandboxRequest::default())
                .await?
                .into_inner()
                .items;
            let mut rows = Vec::new();
            let mut js = Vec::new();
            for p in &items {
                let m = p.metadata.clone().unwrap_or_default();
                let state = PodSandboxState::try_from(p.state)
                    .map(|s| s.as_str_name().trim_start_matches("SANDBOX_").to_string())
                    .unwrap_or_default();
                rows.push(vec![
                    short_id(&p.id),
                    m.name.clone(),
                    m.namespace.clone(),
                    state.clone(),
                    age(p.created_at),
                ]);
                js.push(json!({"id": p.id, "name": m.name, "namespace": m.namespace, "uid": m.uid,
                    "state": state, "createdAt": p.created_at, "labels": p.labels, "runtimeHandler": p.runtime_handler}));
            }
            print(ctx, &["POD ID", "NAME", "NAMESPACE", "STATE", "AGE"], rows, &js)
        }
        PodCmd::Inspect { id } => {
            let r = c
                .pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: id,
                    verbose: true,
                })
                .await?
                .into_inner();
            let s = r.status.unwrap_or_default();
            let net = s.network.clone().unwrap_or_default();
            print_json(&json!({
                "id": s.id,
                "metadata": s.metadata.map(|m| json!({"name": m.name, "namespace": m.namespace, "uid": m.uid, "attempt": m.attempt})),
                "state": PodSandboxState::try_from(s.state).map(|x| x.as_str_name()).unwrap_or(""),
                "createdAt": s.created_at,
                "ip": net.ip,
                "labels": s.labels,
                "annotations": s.annotations,
                "runtimeHandler": s.runtime_handler,
                "containers": r.containers_statuses.iter().map(|c| json!({"id": c.id, "state": ContainerState::try_from(c.state).map(|x| x.as_str_name()).unwrap_or("")})).collect::<Vec<_>>(),
                "info": info_json(&r.info),
            }))
        }
    }
}

pub async fn containers(ctx: &Ctx, cmd: ContainerCmd) -> Result<(), CtlError> {
    let mut c = client::runtime(ctx).await?;
    match cmd {
        ContainerCmd::Ls { all } => {
            let items = c
                .list_containers(ListContainersRequest::default())
                .await?
                .into_inner()
                .containers;
            let mut rows = Vec::new();
            let mut js = Vec::new();
            for x in items
                .iter()
                .filter(|x| all || x.state == ContainerState::ContainerRunning as i32)
            {
                let m = x.metadata.clone().unwrap_or_default();
                let state = ContainerState::try_from(x.state)
                    .map(|s| s.as_str_name().trim_start_matches("CONTAINER_").to_string())
                    .unwrap_or_default();
                let image = x.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
                rows.push(vec![
                    short_id(&x.id),
                    m.name.clone(),
                    image.clone(),
                    state.clone(),
                    age(x.created_at),
                    short_id(&x.pod_sandbox_id),
                ]);
                js.push(json!({"id": x.id, "name": m.name, "attempt": m.attempt, "podSandboxId": x.pod_sandbox_id,
                    "image": image, "imageRef": x.image_ref, "state": state, "createdAt": x.created_at, "labels": x.labels}));
            }
            print(
                ctx,
                &["CONTAINER ID", "NAME", "IMAGE", "STATE", "AGE", "POD ID"],
                rows,
                &js,
            )
        }
        ContainerCmd::Inspect { id } => {
            let r = c
                .container_status(ContainerStatusRequest {
                    container_id: id,
                    verbose: true,
                })
                .await?
                .into_inner();
            let s = r.status.unwrap_or_default();
            print_json(&json!({
                "id": s.id,
                "name": s.metadata.as_ref().map(|m| m.name.clone()),
                "state": ContainerState::try_from(s.state).map(|x| x.as_str_name()).unwrap_or(""),
                "createdAt": s.created_at, "startedAt": s.started_at, "finishedAt": s.finished_at,
                "exitCode": s.exit_code, "reason": s.reason, "message": s.message,
                "image": s.image.map(|i| i.image), "imageRef": s.image_ref,
                "logPath": s.log_path, "labels": s.labels, "annotations": s.annotations,
                "info": info_json(&r.info),
            }))
        }
        ContainerCmd::Logs { id, tail } => {
            let s = c
                .container_status(ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: false,
                })
                .await?
                .into_inner()
                .status
                .unwrap_or_default();
            if s.log_path.is_empty() {
                return Err(CtlError::Refused(format!("container {id} has no log")));
            }
            let text = std::fs::read_to_string(&s.log_path)
                .map_err(|e| CtlError::io(format!("read {}", s.log_path), e))?;
            let lines = cri_log_messages(&text);
            let skip = tail.map(|n| lines.len().saturating_sub(n)).unwrap_or(0);
            for l in &lines[skip..] {
                match ctx.output {
                    Output::Json => println!("{}", json!({"time": l.0, "stream": l.1, "log": l.2})),
                    Output::Table => println!("{}", l.2),
                }
            }
            Ok(())
        }
    }
}

/// The CRI log format (`TIME STREAM P|F MESSAGE`), partial lines joined: (time, stream, message).
fn cri_log_messages(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut partial = String::new();
    for l in text.lines() {
        let mut it = l.splitn(4, ' ');
        let (Some(t), Some(s), Some(tag), msg) = (it.next(), it.next(), it.next(), it.next().unwrap_or(""))
        else {
            continue;
        };
        partial.push_str(msg);
        if tag != "P" {
            out.push((t.to_string(), s.to_string(), std::mem::take(&mut partial)));
        }
    }
    out
}

pub async fn status(ctx: &Ctx) -> Result<(), CtlError> {
    let mut c = client::runtime(ctx).await?;
    let v = c.version(VersionRequest::default()).await?.into_inner();
    let st = c.status(StatusRequest { verbose: true }).await?.into_inner();
    let admin = client::admin(ctx, &Request::Status, true).await?;
    let conds: Vec<Value> = st
        .status
        .as_ref()
        .map(|s| {
            s.conditions
                .iter()
                .map(|c| json!({"type": c.r#type, "status": c.status, "reason": c.reason, "message": c.message}))
                .collect()
        })
        .unwrap_or_default();
    let js = json!({
        "runtimeName": v.runtime_name, "runtimeVersion": v.runtime_version, "runtimeApiVersion": v.runtime_api_version,
        "conditions": conds,
        "handlers": st.runtime_handlers.iter().map(|h| h.name.clone()).collect::<Vec<_>>(),
        "info": info_json(&st.info),
        "crustd": admin,
    });
    if ctx.output == Output::Json {
        return print_json(&js);
    }
    println!(
        "{} {} (CRI {})",
        v.runtime_name, v.runtime_version, v.runtime_api_version
    );
    println!("crustd pid {}", admin["pid"]);
    for c in &conds {
        println!(
            "{:<16} {}  {} {}",
            c["type"].as_str().unwrap_or(""),
            if c["status"].as_bool().unwrap_or(false) {
                "true "
            } else {
                "false"
            },
            c["reason"].as_str().unwrap_or(""),
            c["message"].as_str().unwrap_or("")
        );
    }
    for (key, label, ok) in [
        ("defaultRuntimeHandler", "default handler", "name"),
        ("userNamespaces", "user namespaces", "supported"),
    ] {
        let v: Value = st
            .info
            .get(key)
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or(Value::Null);
        let value = match &v[ok] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if !v.is_null() {
            println!(
                "{label}: {value} ({})",
                v["reason"].as_str().unwrap_or("supported")
            );
        }
    }
    let nri: Value = st
        .info
        .get("nri")
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    let plugins = nri["plugins"].as_array().cloned().unwrap_or_default();
    println!("\nNRI plugins connected: {}", plugins.len());
    for p in &plugins {
        println!(
            "  {}-{}  {}  pid {}",
            p["index"].as_str().unwrap_or(""),
            p["name"].as_str().unwrap_or(""),
            p["kind"].as_str().unwrap_or(""),
            p["pid"]
        );
    }
    println!("\nconfiguration in effect:");
    let cfg: Result<crust::config::Config, _> = serde_json::from_value(admin["config"].clone());
    match cfg.ok().and_then(|c| toml::to_string_pretty(&c).ok()) {
        Some(t) => print!("{t}"),
        None => println!("{}", admin["config"]),
    }
    Ok(())
}
