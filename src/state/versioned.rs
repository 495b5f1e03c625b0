//! A value under a mutex whose every write is counted, so that what is derived from it can be kept
//! until it changes (the list responses kubelet asks for every second). `read` gives shared access,
//! `write` exclusive access and a new version; a holder of a read guard cannot change the value.

use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, MutexGuard};

/// The value and its version.
#[derive(Debug, Default)]
pub struct Versioned<T>(Mutex<Slot<T>>);

#[derive(Debug, Default)]
struct Slot<T> {
    value: T,
    version: u64,
}

/// Shared access, and the version of what it sees.
pub struct ReadGuard<'a, T>(MutexGuard<'a, Slot<T>>);

/// Exclusive access; taking it made a new version.
pub struct WriteGuard<'a, T>(MutexGuard<'a, Slot<T>>);

impl<T> Versioned<T> {
    /// `value` at version 0.
    pub fn new(value: T) -> Self {
        Versioned(Mutex::new(Slot { value, version: 0 }))
    }

    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the value; the version stays.
    pub fn read(&self) -> ReadGuard<'_, T> {
        ReadGuard(self.lock())
    }

    /// Writes the value: the version moves on whether or not the writer changes anything.
    pub fn write(&self) -> WriteGuard<'_, T> {
        let mut g = self.lock();
        g.version += 1;
        WriteGuard(g)
    }
}

impl<T> ReadGuard<'_, T> {
    /// The version of the value as this guard sees it.
    pub fn version(&self) -> u64 {
        self.0.version
    }
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0.value
    }
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0.value
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_counted_and_reads_are_not() {
        let v = Versioned::new(vec![1]);
        let v0 = v.read().version();
        assert_eq!(v.read().version(), v0);
        v.write().push(2);
        let v1 = v.read().version();
        assert_ne!(v1, v0);
        drop(v.write());
        let r = v.read();
        assert_ne!(r.version(), v1, "a write guard counts even when nothing changed");
        assert_eq!(*r, [1, 2]);
    }
}
