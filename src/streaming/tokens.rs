//! Single-use streaming tokens: 32 random bytes (base64url), each naming one pending request, valid
//! until used or until the timeout passes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use cri_api::v1;

/// The request a token stands for.
#[derive(Debug, Clone)]
pub enum Pending {
    Exec(v1::ExecRequest),
    Attach(v1::AttachRequest),
    PortForward(v1::PortForwardRequest),
}

impl Pending {
    /// The URL path segment for this kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }
}

/// Most requests pending at once (older ones are dropped first when full).
const MAX_PENDING: usize = 4096;

/// The token table.
#[derive(Debug)]
pub struct Tokens {
    timeout: Duration,
    pending: Mutex<HashMap<String, (Instant, Pending)>>,
}

impl Tokens {
    /// Tokens valid for `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Tokens {
            timeout,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Stores `p` under a new token and returns the token.
    pub fn insert(&self, p: Pending) -> String {
        let bytes: [u8; 32] = rand::random();
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = Instant::now();
        let mut m = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, (t, _)| now.duration_since(*t) < self.timeout);
        if m.len() >= MAX_PENDING
            && let Some(oldest) = m.iter().min_by_key(|(_, (t, _))| *t).map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
        m.insert(token.clone(), (now, p));
        token
    }

    /// Takes the request for `token` of kind `kind` (it is gone afterwards); `None` if unknown, used,
    /// expired or of another kind.
    pub fn take(&self, kind: &str, token: &str) -> Option<Pending> {
        let mut m = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let (t, p) = m.remove(token)?;
        if t.elapsed() >= self.timeout || p.kind() != kind {
            return None;
        }
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_unguessable_and_expire() {
        let t = Tokens::new(Duration::from_secs(60));
        let a = t.insert(Pending::PortForward(v1::PortForwardRequest::default()));
        let b = t.insert(Pending::PortForward(v1::PortForwardRequest::default()));
        assert_ne!(a, b);
        assert!(a.len() >= 43);
        assert!(t.take("exec", &b).is_none(), "wrong kind");
        assert!(
            t.take("portforward", &b).is_none(),
            "a failed take uses the token up"
        );
        assert!(t.take("portforward", &a).is_some());
        assert!(t.take("portforward", &a).is_none(), "used");
        assert!(t.take("portforward", "nope").is_none());
        let short = Tokens::new(Duration::ZERO);
        let c = short.insert(Pending::PortForward(v1::PortForwardRequest::default()));
        assert!(short.take("portforward", &c).is_none(), "expired");
    }
}
