//! The few operating-system calls the engine makes that std does not wrap. The only module
//! of the crate with `unsafe`.

/// Sets the calling thread's nice value. On Linux `setpriority(PRIO_PROCESS, 0, ..)` applies
/// to the calling thread only, not the whole process.
pub fn set_thread_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The calling thread's nice value.
#[cfg(test)]
pub fn thread_nice() -> std::io::Result<i32> {
    // getpriority may return -1 legitimately: errno tells.
    // SAFETY: errno is thread-local; writing it before the call is how its man page says to
    // tell an error from a nice value of -1.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: as for setpriority.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        Some(0) | None => Ok(nice),
        Some(_) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn raising_the_nice_value_is_always_allowed_and_reads_back() {
        // On a thread of its own: the change must not leak into other tests.
        std::thread::spawn(|| {
            let before = super::thread_nice().unwrap();
            let wanted = (before + 1).min(19);
            super::set_thread_nice(wanted).unwrap();
            assert_eq!(super::thread_nice().unwrap(), wanted);
        })
        .join()
        .unwrap();
    }
}
