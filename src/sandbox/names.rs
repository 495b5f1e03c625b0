//! Pod name reservations: one pod per (name, namespace, uid, attempt). A second request for a name
//! that is taken fails naming the pod; one that arrives while the first is still being created waits
//! for it and gets the same outcome (kubelet retries slow creates).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::record::NameKey;
use crate::{Error, Result};

/// The outcome of a creation: the pod ID, or the error (shared with waiting retries).
type Outcome = Option<std::result::Result<String, SharedError>>;

enum Slot {
    InFlight(watch::Receiver<Outcome>),
    Taken(String),
}

/// All reservations.
#[derive(Default)]
pub struct Names {
    map: Arc<Mutex<HashMap<NameKey, Slot>>>,
}

/// What `reserve` gave.
pub enum Reservation {
    /// The caller creates the pod and must `complete` the ticket.
    Mine(Ticket),
    /// Another request is creating it: wait for its outcome.
    Wait(watch::Receiver<Outcome>),
}

/// The right (and duty) to create a pod under a name.
pub struct Ticket {
    map: Arc<Mutex<HashMap<NameKey, Slot>>>,
    key: NameKey,
    tx: Option<watch::Sender<Outcome>>,
}

impl Names {
    /// Records a name as taken by `id` (at load).
    pub fn taken(&self, key: NameKey, id: &str) {
        self.lock().insert(key, Slot::Taken(id.to_string()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NameKey, Slot>> {
        lock(&self.map)
    }

    /// Reserves `key`: the caller's, a wait on an in-flight creation, or AlreadyExists.
    pub fn reserve(&self, key: &NameKey) -> Result<Reservation> {
        let mut map = self.lock();
        match map.get(key) {
            Some(Slot::Taken(id)) => Err(Error::AlreadyExists(format!(
                "pod sandbox {key} already exists as {id}"
            ))),
            Some(Slot::InFlight(rx)) => Ok(Reservation::Wait(rx.clone())),
            None => {
                let (tx, rx) = watch::channel(None);
                map.insert(key.clone(), Slot::InFlight(rx));
                Ok(Reservation::Mine(Ticket {
                    map: self.map.clone(),
                    key: key.clone(),
                    tx: Some(tx),
                }))
            }
        }
    }

    /// Frees `key` if `id` holds it.
    pub fn release(&self, key: &NameKey, id: &str) {
        let mut map = self.lock();
        if matches!(map.get(key), Some(Slot::Taken(t)) if t == id) {
            map.remove(key);
        }
    }
}

impl Ticket {
    /// Ends the creation: the name is taken by the new pod, or freed on failure; waiters are told.
    pub fn complete(mut self, r: &Result<String>) {
        self.finish(match r {
            Ok(id) => Ok(id.clone()),
            Err(e) => Err(SharedError::from(e)),
        });
    }

    fn finish(&mut self, outcome: std::result::Result<String, SharedError>) {
        let Some(tx) = self.tx.take() else { return };
        {
            let mut map = lock(&self.map);
            match &outcome {
                Ok(id) => {
                    map.insert(self.key.clone(), Slot::Taken(id.clone()));
                }
                Err(_) => {
                    map.remove(&self.key);
                }
            }
        }
        let _ = tx.send(Some(outcome));
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.finish(Err(SharedError(Error::Internal(
            "the pod sandbox creation was abandoned".into(),
        ))));
    }
}

fn lock(m: &Mutex<HashMap<NameKey, Slot>>) -> std::sync::MutexGuard<'_, HashMap<NameKey, Slot>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits for an in-flight creation's outcome.
pub async fn wait(mut rx: watch::Receiver<Outcome>) -> Result<String> {
    let r = rx
        .wait_for(Option::is_some)
        .await
        .map_err(|_| Error::Internal("the pod sandbox creation was abandoned".into()))?;
    match r.as_ref() {
        Some(Ok(id)) => Ok(id.clone()),
        Some(Err(e)) => Err(e.to_error()),
        None => Err(Error::Internal("no outcome".into())),
    }
}

/// An error that can be handed to several callers.
#[derive(Debug)]
pub struct SharedError(Error);

impl From<&Error> for SharedError {
    fn from(e: &Error) -> Self {
        SharedError(e.duplicate())
    }
}

impl Clone for SharedError {
    fn clone(&self) -> Self {
        SharedError(self.0.duplicate())
    }
}

impl SharedError {
    fn to_error(&self) -> Error {
        self.0.duplicate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> NameKey {
        NameKey {
            name: "p".into(),
            namespace: "ns".into(),
            uid: "u".into(),
            attempt: 0,
        }
    }

    #[tokio::test]
    async fn retry_waits_for_in_flight_then_name_is_taken() {
        let names = Names::default();
        let Reservation::Mine(t) = names.reserve(&key()).unwrap() else {
            panic!("not mine")
        };
        let Reservation::Wait(rx) = names.reserve(&key()).unwrap() else {
            panic!("no wait")
        };
        t.complete(&Ok("abc".into()));
        assert_eq!(wait(rx).await.unwrap(), "abc");
        let e = names.reserve(&key()).err().unwrap();
        assert!(
            matches!(e, Error::AlreadyExists(_)) && e.to_string().contains("abc"),
            "{e}"
        );
        names.release(&key(), "abc");
        assert!(matches!(names.reserve(&key()).unwrap(), Reservation::Mine(_)));
    }

    #[tokio::test]
    async fn failure_frees_the_name_and_reaches_waiters() {
        let names = Names::default();
        let Reservation::Mine(t) = names.reserve(&key()).unwrap() else {
            panic!()
        };
        let Reservation::Wait(rx) = names.reserve(&key()).unwrap() else {
            panic!()
        };
        t.complete(&Err(Error::invalid("runtime_handler", "unknown")));
        let e = wait(rx).await.unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        assert!(matches!(names.reserve(&key()).unwrap(), Reservation::Mine(_)));
    }

    #[tokio::test]
    async fn abandoned_ticket_frees_the_name() {
        let names = Names::default();
        let Reservation::Mine(t) = names.reserve(&key()).unwrap() else {
            panic!()
        };
        let Reservation::Wait(rx) = names.reserve(&key()).unwrap() else {
            panic!()
        };
        drop(t);
        assert!(wait(rx).await.is_err());
        assert!(matches!(names.reserve(&key()).unwrap(), Reservation::Mine(_)));
    }
}
