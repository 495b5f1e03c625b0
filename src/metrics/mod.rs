//! crustd's own Prometheus metrics (`[metrics] address`): per-RPC latency and outcome, pulls and their
//! registry retries, OOM kills, monitor and CNI failures, containers and pods by state, and crustd's process metrics.
//!
//! One process-wide [`Metrics`] ([`global`]) that the core counts into wherever things happen
//! (pulls in `image`, CNI in `sandbox`, monitors and OOM kills in `container`) and the gRPC layer
//! counts requests into. The state gauges are set from the in-memory stores at each scrape
//! ([`Metrics::set_states`]); the process metrics are read from `/proc/self` at each scrape
//! ([`process`]). The exposition is prometheus-client's text encoder (OpenMetrics text).

pub mod process;

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A gRPC method and the status code it ended with.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// `/runtime.v1.RuntimeService/Version`.
    pub method: String,
    /// `OK`, `NotFound`, ... (the gRPC code names).
    pub code: String,
}

/// A gRPC method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

/// Why something failed ([`crate::Error::kind`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// A CNI operation (`ADD`, `DEL`) and why it failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CniLabels {
    pub op: String,
    pub reason: String,
}

/// A container or pod state (`running`, `created`, `exited`; `ready`, `notready`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn rpc_histogram() -> Histogram {
    // 1 ms .. about 60 s.
    Histogram::new(exponential_buckets(0.001, 2.5, 13))
}

/// Every metric crustd exports.
pub struct Metrics {
    registry: Registry,
    rpc_requests: Family<RpcLabels, Counter>,
    rpc_duration: HistogramFamily<MethodLabels>,
    pull_bytes: Counter,
    pulls: Counter,
    pull_duration: Histogram,
    pull_failures: Family<ReasonLabels, Counter>,
    pull_retries: Family<ReasonLabels, Counter>,
    oom_kills: Counter,
    monitor_failures: Family<ReasonLabels, Counter>,
    cni_failures: Family<CniLabels, Counter>,
    containers: Family<StateLabels, Gauge>,
    pods: Family<StateLabels, Gauge>,
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let rpc_requests = Family::<RpcLabels, Counter>::default();
        let rpc_duration = HistogramFamily::<MethodLabels>::new_with_constructor(rpc_histogram as fn() -> _);
        let pull_bytes = Counter::default();
        let pulls = Counter::default();
        let pull_duration = Histogram::new(exponential_buckets(0.1, 2.0, 12));
        let pull_failures = Family::<ReasonLabels, Counter>::default();
        let pull_retries = Family::<ReasonLabels, Counter>::default();
        let oom_kills = Counter::default();
        let monitor_failures = Family::<ReasonLabels, Counter>::default();
        let cni_failures = Family::<CniLabels, Counter>::default();
        let containers = Family::<StateLabels, Gauge>::default();
        let pods = Family::<StateLabels, Gauge>::default();
        let r = registry.sub_registry_with_prefix("crust");
        r.register(
            "grpc_requests",
            "CRI requests handled, by method and gRPC status code",
            rpc_requests.clone(),
        );
        r.register(
            "grpc_request_duration_seconds",
            "Time to handle a CRI request (until its response headers), by method",
            rpc_duration.clone(),
        );
        r.register("image_pulls", "Images pulled successfully", pulls.clone());
        r.register(
            "image_pull_bytes",
            "Bytes of blobs downloaded from registries",
            pull_bytes.clone(),
        );
        r.register(
            "image_pull_duration_seconds",
            "Duration of successful image pulls",
            pull_duration.clone(),
        );
        r.register(
            "image_pull_failures",
            "Failed image pulls, by reason",
            pull_failures.clone(),
        );
        r.register(
            "image_pull_retries",
            "Registry requests of image pulls tried again after a transient failure, by reason",
            pull_retries.clone(),
        );
        r.register(
            "container_oom_kills",
            "Containers that ended killed by the OOM killer",
            oom_kills.clone(),
        );
        r.register(
            "monitor_failures",
            "Container and pause monitors that failed to start, by reason",
            monitor_failures.clone(),
        );
        r.register(
            "cni_failures",
            "Failed CNI plugin invocations, by operation and reason",
            cni_failures.clone(),
        );
        r.register("containers", "Containers by state", containers.clone());
        r.register("pods", "Pod sandboxes by state", pods.clone());
        registry.register_collector(Box::new(process::ProcessCollector));
        Metrics {
            registry,
            rpc_requests,
            rpc_duration,
            pull_bytes,
            pulls,
            pull_duration,
            pull_failures,
            pull_retries,
            oom_kills,
            monitor_failures,
            cni_failures,
            containers,
            pods,
        }
    }

    /// One request done: its method, gRPC code name (`OK`, `NotFound`, ...) and duration.
    pub fn rpc(&self, method: &str, code: &str, elapsed: Duration) {
        self.rpc_requests
            .get_or_create(&RpcLabels {
                method: method.to_string(),
                code: code.to_string(),
            })
            .inc();
        self.rpc_duration
            .get_or_create(&MethodLabels {
                method: method.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Bytes downloaded for a pull.
    pub fn pull_bytes(&self, n: u64) {
        self.pull_bytes.inc_by(n);
    }

    /// A pull's outcome.
    pub fn pull_done(&self, r: &crate::Result<String>, elapsed: Duration) {
        match r {
            Ok(_) => {
                self.pulls.inc();
                self.pull_duration.observe(elapsed.as_secs_f64());
            }
            Err(e) => {
                self.pull_failures
                    .get_or_create(&ReasonLabels {
                        reason: e.kind().to_string(),
                    })
                    .inc();
            }
        }
    }

    /// A registry request of a pull is tried again after a transient failure (`reason`: see
    /// `image::registry::retry::Failure::reason`).
    pub fn pull_retry(&self, reason: &str) {
        self.pull_retries
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// A container was OOM-killed.
    pub fn oom_kill(&self) {
        self.oom_kills.inc();
    }

    /// A monitor (container or pause) failed to start.
    pub fn monitor_failure(&self, e: &crate::Error) {
        self.monitor_failures
            .get_or_create(&ReasonLabels {
                reason: e.kind().to_string(),
            })
            .inc();
    }

    /// A CNI invocation failed.
    pub fn cni_failure(&self, op: &str, e: &crate::Error) {
        self.cni_failures
            .get_or_create(&CniLabels {
                op: op.to_string(),
                reason: e.kind().to_string(),
            })
            .inc();
    }

    /// Sets the state gauges: (state, count) for containers and for pods. States not listed go to
    /// zero (they stay in the output once seen).
    pub fn set_states(&self, containers: &[(&str, i64)], pods: &[(&str, i64)]) {
        for (fam, vals) in [(&self.containers, containers), (&self.pods, pods)] {
            fam.clear();
            for (state, n) in vals {
                fam.get_or_create(&StateLabels {
                    state: state.to_string(),
                })
                .set(*n);
            }
        }
    }

    /// The exposition text (OpenMetrics text format, which Prometheus reads).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_and_process_metrics() {
        let m = Metrics::new();
        m.rpc(
            "/runtime.v1.RuntimeService/Version",
            "OK",
            Duration::from_millis(3),
        );
        m.rpc(
            "/runtime.v1.RuntimeService/Version",
            "NotFound",
            Duration::from_millis(3),
        );
        m.set_states(&[("running", 2)], &[("ready", 1)]);
        let text = m.encode().unwrap();
        assert!(
            text.contains(
                "crust_grpc_requests_total{method=\"/runtime.v1.RuntimeService/Version\",code=\"OK\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("code=\"NotFound\"} 1"), "{text}");
        assert!(text.contains("crust_containers{state=\"running\"} 2"), "{text}");
        assert!(
            text.contains("crust_grpc_request_duration_seconds_bucket"),
            "{text}"
        );
        for name in [
            "process_resident_memory_bytes ",
            "process_cpu_seconds_total ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(name), "{name} missing from {text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
