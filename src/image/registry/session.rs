//! One repository at one endpoint: requests with authentication (Basic, or a Bearer token fetched from
//! the challenge's realm, cached for the session), manifests (verified against their digest, tried again
//! after transient failures, see `retry`), blobs from a given byte on (`Range`).

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_RANGE, CONTENT_TYPE, RANGE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use sha2::{Digest, Sha256};

use super::Endpoint;
use super::auth::{Challenge, Credentials, parse_challenge};
use super::retry::{Failure, Retry, Tries, retry_after};
use crate::{Error, Result};

/// Media types a manifest request accepts.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or index accepted (they are small JSON documents; containerd's bound too).
pub const MAX_MANIFEST: u64 = 4 << 20;

/// Largest token response accepted (a JSON document holding a token).
pub const MAX_TOKEN_RESPONSE: u64 = 1 << 20;

/// A fetched manifest (or index), verified.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub media_type: String,
    /// `sha256:` of the body.
    pub digest: String,
    pub body: Vec<u8>,
}

/// Requests to one repository at one endpoint.
pub struct Session {
    client: reqwest::Client,
    /// Where.
    pub endpoint: Endpoint,
    repo: String,
    creds: Credentials,
    auth: tokio::sync::Mutex<Option<String>>,
    /// No bytes for this long fails the request.
    pub stall: Duration,
    /// A manifest or token request not done in this long fails.
    pub request_timeout: Duration,
    /// How a request is tried again after a transient failure.
    pub retry: Retry,
}

/// The error chain of an HTTP failure, as one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

impl Session {
    /// A session; `creds` may be empty (anonymous). `stall` bounds each wait for bytes,
    /// `request_timeout` the whole of a manifest or token request.
    pub fn new(
        client: reqwest::Client,
        endpoint: Endpoint,
        repo: &str,
        creds: Credentials,
        stall: Duration,
        request_timeout: Duration,
    ) -> Self {
        Session {
            client,
            endpoint,
            repo: repo.to_string(),
            creds,
            auth: tokio::sync::Mutex::new(None),
            stall,
            request_timeout,
            retry: Retry::default(),
        }
    }

    /// The endpoint host, for messages.
    pub fn host(&self) -> &str {
        &self.endpoint.host
    }

    /// A failed connection or transfer while fetching `what`: worth another try unless TLS failed (a
    /// certificate that is refused now will be refused again).
    fn net_err(&self, e: reqwest::Error, what: &str) -> Failure {
        let text = chain(&e);
        let host = self.host();
        if e.is_timeout() {
            Failure::transient(
                Error::DeadlineExceeded(format!("{host} timed out while sending {what}: {text}")),
                "timeout",
            )
        } else if text.contains("certificate") || text.contains("TLS") || text.contains("tls") {
            Error::Unavailable(format!("TLS with {host} failed: {text}")).into()
        } else if e.is_builder() {
            Error::Internal(format!("bad request to {host} for {what}: {text}")).into()
        } else if e.is_connect() {
            Failure::transient(
                Error::Unavailable(format!("{host} is unreachable (fetching {what}): {text}")),
                "connect",
            )
        } else {
            Failure::transient(
                Error::Unavailable(format!("{host} failed while sending {what}: {text}")),
                "reset",
            )
        }
    }

    fn late(&self, what: &str, wait: Duration) -> Error {
        if wait == self.stall {
            return self.stalled(what);
        }
        Error::DeadlineExceeded(format!(
            "{what} from {}: not received within {} s",
            self.endpoint.base,
            wait.as_secs()
        ))
    }

    /// [`Self::late`] as a failure worth another try.
    fn late_failure(&self, what: &str, wait: Duration) -> Failure {
        let reason = if wait == self.stall { "stall" } else { "timeout" };
        Failure::transient(self.late(what, wait), reason)
    }

    fn stalled(&self, what: &str) -> Error {
        Error::DeadlineExceeded(format!(
            "pull stalled: no data received for {} s from {} while fetching {what}",
            self.stall.as_secs(),
            self.host()
        ))
    }

    /// GET `url` (from byte `from` on when not 0), authenticating on a 401 challenge (once); each
    /// attempt's headers must arrive within `wait`.
    async fn get(
        &self,
        url: &str,
        accept: Option<&str>,
        what: &str,
        wait: Duration,
        from: u64,
    ) -> Result<reqwest::Response, Failure> {
        let mut authenticated = false;
        loop {
            let mut rb = self.client.get(url);
            if let Some(a) = accept {
                rb = rb.header(ACCEPT, a);
            }
            if from > 0 {
                rb = rb.header(RANGE, format!("bytes={from}-"));
            }
            if let Some(h) = self.auth.lock().await.clone() {
                rb = rb.header(AUTHORIZATION, h);
            }
            let resp = tokio::time::timeout(wait, rb.send())
                .await
                .map_err(|_| self.late_failure(what, wait))?
                .map_err(|e| self.net_err(e, what))?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            if authenticated {
                return Err(Error::Unauthenticated(format!(
                    "authentication failed at {}: the registry refused the credentials for {}",
                    self.host(),
                    self.repo
                ))
                .into());
            }
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_challenge);
            let header = self.authorize(challenge).await?;
            *self.auth.lock().await = Some(header);
            authenticated = true;
        }
    }

    /// The `Authorization` header answering a challenge.
    async fn authorize(&self, challenge: Option<Challenge>) -> Result<String> {
        let host = self.host();
        if !self.creds.registry_token.is_empty() {
            return Ok(format!("Bearer {}", self.creds.registry_token));
        }
        match challenge {
            None | Some(Challenge::Basic) => {
                if self.creds.username.is_empty() {
                    return Err(Error::Unauthenticated(format!(
                        "authentication failed at {host}: the registry requires credentials for {} and none were given",
                        self.repo
                    )));
                }
                Ok(self.creds.basic())
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scope = scope.unwrap_or_else(|| format!("repository:{}:pull", self.repo));
                let url = reqwest::Url::parse(&realm).map_err(|e| {
                    Error::Unauthenticated(format!(
                        "authentication failed at {host}: bad token realm {realm:?}: {e}"
                    ))
                })?;
                let shown = format!("{}://{}{}", url.scheme(), url.authority(), url.path());
                let body = tokio::time::timeout(self.request_timeout, self.fetch_token(url, &scope, service))
                    .await
                    .map_err(|_| {
                        Error::DeadlineExceeded(format!(
                            "authentication at {host} timed out: the token server {shown} did not answer within {} s",
                            self.request_timeout.as_secs()
                        ))
                    })??;
                let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
                    Error::Unauthenticated(format!(
                        "authentication failed at {host}: bad token response: {e}"
                    ))
                })?;
                let token = v
                    .get("token")
                    .or_else(|| v.get("access_token"))
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| {
                        Error::Unauthenticated(format!(
                            "authentication failed at {host}: the token response has no token"
                        ))
                    })?;
                Ok(format!("Bearer {token}"))
            }
        }
    }

    /// Asks the token server `url` for a token for `scope`; returns the response body (bounded).
    async fn fetch_token(
        &self,
        mut url: reqwest::Url,
        scope: &str,
        service: Option<String>,
    ) -> Result<Vec<u8>> {
        let host = self.host();
        let shown = format!("{}://{}{}", url.scheme(), url.authority(), url.path());
        let resp = if !self.creds.identity_token.is_empty() {
            let mut form =
                reqwest::Url::parse("http://form.invalid/").map_err(|e| Error::Internal(e.to_string()))?;
            {
                let mut q = form.query_pairs_mut();
                q.append_pair("grant_type", "refresh_token");
                q.append_pair("refresh_token", &self.creds.identity_token);
                q.append_pair("client_id", "crust");
                q.append_pair("scope", scope);
                if let Some(s) = &service {
                    q.append_pair("service", s);
                }
            }
            let body = form.query().unwrap_or("").to_string();
            self.client
                .post(url)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
        } else {
            {
                let mut q = url.query_pairs_mut();
                if let Some(s) = &service {
                    q.append_pair("service", s);
                }
                q.append_pair("scope", scope);
            }
            let mut rb = self.client.get(url);
            if !self.creds.username.is_empty() {
                rb = rb.header(AUTHORIZATION, self.creds.basic());
            }
            rb.send().await
        };
        let mut resp = resp.map_err(|e| self.net_err(e, "a token").err)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Error::Unauthenticated(format!(
                "authentication failed at {host}: the token server {shown} answered HTTP {status}"
            )));
        }
        self.read_bounded(&mut resp, MAX_TOKEN_RESPONSE, "token response", &shown)
            .await
            .map_err(|f| f.err)
    }

    /// The whole body of `resp`, refused (`ResourceExhausted`) past `max` bytes, whatever its
    /// `Content-Length` says; `from` names the server in the refusal.
    async fn read_bounded(
        &self,
        resp: &mut reqwest::Response,
        max: u64,
        what: &str,
        from: &str,
    ) -> Result<Vec<u8>, Failure> {
        let too_large = || Error::ResourceExhausted(format!("{what} from {from} is larger than {max} bytes"));
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(too_large().into());
        }
        let mut body = Vec::new();
        while let Some(c) = self.chunk(resp, what).await? {
            if (body.len() + c.len()) as u64 > max {
                return Err(too_large().into());
            }
            body.extend_from_slice(&c);
        }
        Ok(body)
    }

    /// The failure an unsuccessful answer means: worth another try for 408, 429, 500, 502, 503 and
    /// 504 (those containerd tries again), after the wait the registry asks for in `Retry-After`.
    fn status_err(&self, resp: &reqwest::Response, what: &str) -> Failure {
        let at = &self.endpoint.base;
        let status = resp.status();
        match status {
            StatusCode::NOT_FOUND => Error::NotFound(format!("{what} not found at {at}")).into(),
            StatusCode::FORBIDDEN => {
                Error::PermissionDenied(format!("{at} denied access to {what} (HTTP 403)")).into()
            }
            StatusCode::REQUEST_TIMEOUT
            | StatusCode::TOO_MANY_REQUESTS
            | StatusCode::INTERNAL_SERVER_ERROR
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT => Failure {
                after: resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(retry_after),
                ..Failure::transient(
                    Error::Unavailable(format!("{} answered HTTP {status} for {what}", self.host())),
                    format!("http_{}", status.as_u16()),
                )
            },
            s if s.is_server_error() => {
                Error::Unavailable(format!("{} answered HTTP {s} for {what}", self.host())).into()
            }
            s => Error::FailedPrecondition(format!("{at} answered HTTP {s} for {what}")).into(),
        }
    }

    /// Fetches the manifest or index `reference` (tag or digest), verified when it is a digest. Its
    /// headers, then its body, each within the request timeout (a token fetch has its own); tried again
    /// after transient failures as `retry` allows.
    pub async fn manifest(&self, reference: &str) -> Result<Manifest> {
        self.manifest_tried(reference, self.retry).await
    }

    /// `manifest`, tried again as `policy` allows.
    pub async fn manifest_tried(&self, reference: &str, policy: Retry) -> Result<Manifest> {
        let mut tries = Tries::new(policy);
        loop {
            match self.manifest_once(reference).await {
                Ok(m) => return Ok(m),
                Err(f) => tries.again(f, reference).await?,
            }
        }
    }

    async fn manifest_once(&self, reference: &str) -> Result<Manifest, Failure> {
        let what = if reference.starts_with("sha256:") {
            format!("manifest {}@{reference}", self.repo)
        } else {
            format!("manifest {}:{reference}", self.repo)
        };
        let what = what.as_str();
        let url = format!("{}/v2/{}/manifests/{reference}", self.endpoint.base, self.repo);
        let mut resp = self
            .get(
                &url,
                Some(MANIFEST_ACCEPT),
                what,
                self.request_timeout.min(self.stall),
                0,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_err(&resp, what));
        }
        let ctype = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        let body = tokio::time::timeout(
            self.request_timeout,
            self.read_bounded(&mut resp, MAX_MANIFEST, what, &self.endpoint.base),
        )
        .await
        .map_err(|_| self.late_failure(what, self.request_timeout))??;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        if reference.starts_with("sha256:") && digest != reference {
            return Err(Error::DataLoss(format!(
                "{what} from {}: content has digest {digest}",
                self.host()
            ))
            .into());
        }
        let media_type = media_type_of(&ctype, &body);
        Ok(Manifest {
            media_type,
            digest,
            body,
        })
    }

    /// Starts fetching a blob from byte `from` on (with a `Range` request when not 0); returns the
    /// successful response to stream from and the byte its body starts at: `from` when the registry
    /// sent that range (206), 0 when it sent the whole blob (200) instead.
    pub async fn blob(&self, digest: &str, from: u64) -> Result<(reqwest::Response, u64), Failure> {
        let what = format!("blob {digest} of {}", self.repo);
        let url = format!("{}/v2/{}/blobs/{digest}", self.endpoint.base, self.repo);
        let resp = self.get(&url, None, &what, self.stall, from).await?;
        if resp.status() == StatusCode::PARTIAL_CONTENT {
            let start = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(range_start);
            if from == 0 || start != Some(from) {
                return Err(Error::FailedPrecondition(format!(
                    "{} answered a request for {what} from byte {from} with the range {:?}",
                    self.endpoint.base,
                    resp.headers().get(CONTENT_RANGE)
                ))
                .into());
            }
            return Ok((resp, from));
        }
        if !resp.status().is_success() {
            return Err(self.status_err(&resp, &what));
        }
        Ok((resp, 0))
    }

    /// The next chunk of a response body, with the stall timeout.
    pub async fn chunk(
        &self,
        resp: &mut reqwest::Response,
        what: &str,
    ) -> Result<Option<bytes::Bytes>, Failure> {
        tokio::time::timeout(self.stall, resp.chunk())
            .await
            .map_err(|_| Failure::transient(self.stalled(what), "stall"))?
            .map_err(|e| self.net_err(e, what))
    }
}

/// The first byte of a `Content-Range: bytes FIRST-LAST/SIZE`.
fn range_start(v: &str) -> Option<u64> {
    v.trim()
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The manifest's media type: the header unless it is generic, else the body's `mediaType`, else guessed.
fn media_type_of(header: &str, body: &[u8]) -> String {
    if header.starts_with("application/vnd.") {
        return header.to_string();
    }
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    if let Some(m) = v.get("mediaType").and_then(|m| m.as_str()) {
        return m.to_string();
    }
    if v.get("manifests").is_some() {
        super::super::manifest::OCI_INDEX.to_string()
    } else {
        super::super::manifest::OCI_MANIFEST.to_string()
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
