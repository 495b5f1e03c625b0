//! The fault-injection suite's reporting (`make faults`, `tests/faults/`): each scenario injects one fault
//! into a real part (a full filesystem, a misbehaving registry proxy, a runc wrapper that hangs, a CNI
//! plugin that fails) and prints one line, `fault <name>: held` (followed by `(<what was measured>)` for a
//! scenario that measures) or `fault <name>: FAILED <what was seen>`;
//! `conformance/faults.sh` counts those lines into `faults: N passed, M failed`.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

/// Runs scenario `name`: `held` when `f` returns normally, `FAILED` with the panic's message (an
/// assertion's) when it panics, which then fails the test as well.
pub fn scenario(name: &str, f: impl FnOnce()) {
    scenario_measured(name, || {
        f();
        String::new()
    })
}

/// [`scenario`] for a body that measures something: it returns what it measured, which its `held` line
/// gives in parentheses (`fault <name>: held (<measured>)`).
pub fn scenario_measured(name: &str, f: impl FnOnce() -> String) {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(m) if m.is_empty() => println!("fault {name}: held"),
        Ok(m) => println!("fault {name}: held ({m})"),
        Err(p) => {
            println!("fault {name}: FAILED {}", message(&*p));
            resume_unwind(p)
        }
    }
}

/// [`scenario`] for an async body, whose value it returns (so that later scenarios can build on what
/// this one made).
pub async fn scenario_async<T>(name: &str, f: impl std::future::Future<Output = T>) -> T {
    use futures::FutureExt;
    match AssertUnwindSafe(f).catch_unwind().await {
        Ok(v) => {
            println!("fault {name}: held");
            v
        }
        Err(p) => {
            println!("fault {name}: FAILED {}", message(&*p));
            resume_unwind(p)
        }
    }
}

/// A panic's message on one line.
fn message(p: &(dyn std::any::Any + Send)) -> String {
    let what = p
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into());
    what.split_whitespace().collect::<Vec<_>>().join(" ")
}
