//! One repository at one endpoint: requests with authentication (Basic, or a Bearer token fetched from
//! the challenge's realm, cached for the session), manifests (verified against their digest), blobs.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use sha2::{Digest, Sha256};

use super::Endpoint;
use super::auth::{Challenge, Credentials, parse_challenge};
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
        }
    }

    /// The endpoint host, for messages.
    pub fn host(&self) -> &str {
        &self.endpoint.host
    }

    fn net_err(&self, e: reqwest::Error) -> Error {
        let text = chain(&e);
        if e.is_timeout() {
            Error::DeadlineExceeded(format!("{}: timed out: {text}", self.host()))
        } else if text.contains("certificate") || text.contains("TLS") || text.contains("tls") {
            Error::Unavailable(format!("TLS with {} failed: {text}", self.host()))
        } else {
            Error::Unavailable(format!("{} is unreachable: {text}", self.host()))
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

    fn stalled(&self, what: &str) -> Error {
        Error::DeadlineExceeded(format!(
            "pull stalled: no data received for {} s from {} while fetching {what}",
            self.stall.as_secs(),
            self.host()
        ))
    }

    /// GET `url`, authenticating on a 401 challenge (once); each attempt's headers must arrive within
    /// `wait`.
    async fn get(
        &self,
        url: &str,
        accept: Option<&str>,
        what: &str,
        wait: Duration,
    ) -> Result<reqwest::Response> {
        let mut authenticated = false;
        loop {
            let mut rb = self.client.get(url);
            if let Some(a) = accept {
                rb = rb.header(ACCEPT, a);
            }
            if let Some(h) = self.auth.lock().await.clone() {
                rb = rb.header(AUTHORIZATION, h);
            }
            let resp = tokio::time::timeout(wait, rb.send())
                .await
                .map_err(|_| self.late(what, wait))?
                .map_err(|e| self.net_err(e))?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            if authenticated {
                return Err(Error::Unauthenticated(format!(
                    "authentication failed at {}: the registry refused the credentials for {}",
                    self.host(),
                    self.repo
                )));
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
        let mut resp = resp.map_err(|e| self.net_err(e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Error::Unauthenticated(format!(
                "authentication failed at {host}: the token server {shown} answered HTTP {status}"
            )));
        }
        self.read_bounded(&mut resp, MAX_TOKEN_RESPONSE, "token response", &shown)
            .await
    }

    /// The whole body of `resp`, refused (`ResourceExhausted`) past `max` bytes, whatever its
    /// `Content-Length` says; `from` names the server in the refusal.
    async fn read_bounded(
        &self,
        resp: &mut reqwest::Response,
        max: u64,
        what: &str,
        from: &str,
    ) -> Result<Vec<u8>> {
        let too_large = || Error::ResourceExhausted(format!("{what} from {from} is larger than {max} bytes"));
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(c) = self.chunk(resp, what).await? {
            if (body.len() + c.len()) as u64 > max {
                return Err(too_large());
            }
            body.extend_from_slice(&c);
        }
        Ok(body)
    }

    fn status_err(&self, status: StatusCode, what: &str) -> Error {
        let at = &self.endpoint.base;
        match status {
            StatusCode::NOT_FOUND => Error::NotFound(format!("{what} not found at {at}")),
            StatusCode::FORBIDDEN => {
                Error::PermissionDenied(format!("{at} denied access to {what} (HTTP 403)"))
            }
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                Error::Unavailable(format!("{} answered HTTP {s} for {what}", self.host()))
            }
            s => Error::FailedPrecondition(format!("{at} answered HTTP {s} for {what}")),
        }
    }

    /// Fetches the manifest or index `reference` (tag or digest), verified when it is a digest. Its
    /// headers, then its body, each within the request timeout (a token fetch has its own).
    pub async fn manifest(&self, reference: &str) -> Result<Manifest> {
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
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_err(resp.status(), what));
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
        .map_err(|_| self.late(what, self.request_timeout))??;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        if reference.starts_with("sha256:") && digest != reference {
            return Err(Error::FailedPrecondition(format!(
                "{what} from {}: content has digest {digest}",
                self.host()
            )));
        }
        let media_type = media_type_of(&ctype, &body);
        Ok(Manifest {
            media_type,
            digest,
            body,
        })
    }

    /// Starts fetching a blob; returns the successful response to stream from.
    pub async fn blob(&self, digest: &str) -> Result<reqwest::Response> {
        let what = format!("blob {digest} of {}", self.repo);
        let url = format!("{}/v2/{}/blobs/{digest}", self.endpoint.base, self.repo);
        let resp = self.get(&url, None, &what, self.stall).await?;
        if !resp.status().is_success() {
            return Err(self.status_err(resp.status(), &what));
        }
        Ok(resp)
    }

    /// The next chunk of a response body, with the stall timeout.
    pub async fn chunk(&self, resp: &mut reqwest::Response, what: &str) -> Result<Option<bytes::Bytes>> {
        tokio::time::timeout(self.stall, resp.chunk())
            .await
            .map_err(|_| self.stalled(what))?
            .map_err(|e| self.net_err(e))
    }
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
