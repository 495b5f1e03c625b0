//! `crust-pause`: the pod's infra process. It holds the pod's namespaces by existing, reaps zombies
//! (it is PID 1 when the pod shares a PID namespace), exits 0 on SIGTERM or SIGINT, and otherwise sleeps
//! in `pause()`. Built static (see the workspace Cargo.toml's `tiny` profile); only libc.

use std::ffi::c_int;

extern "C" fn on_terminate(_: c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(0) }
}

extern "C" fn on_child(_: c_int) {
    // SAFETY: waitpid with WNOHANG is async-signal-safe; errno is saved and restored around it.
    unsafe {
        let errno = *libc::__errno_location();
        while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {}
        *libc::__errno_location() = errno;
    }
}

fn install(sig: c_int, handler: extern "C" fn(c_int)) -> bool {
    // SAFETY: a zeroed sigaction is valid; we set the handler and an empty mask.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = libc::SA_RESTART
            | if sig == libc::SIGCHLD {
                libc::SA_NOCLDSTOP
            } else {
                0
            };
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut()) == 0
    }
}

fn main() {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "-v" || a == "--version")
    {
        println!("crust-pause {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    let ok = install(libc::SIGTERM, on_terminate)
        && install(libc::SIGINT, on_terminate)
        && install(libc::SIGCHLD, on_child);
    if !ok {
        eprintln!("crust-pause: cannot install signal handlers");
        std::process::exit(1);
    }
    // Children that exited before the handler was installed.
    on_child(0);
    loop {
        // SAFETY: pause(2) just sleeps until a signal.
        unsafe { libc::pause() };
    }
}
