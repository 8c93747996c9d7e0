//! Large allocations are checked against what the process can get before they are made.
//!
//! Why: with Linux's overcommit a huge `Vec` is granted and the process is killed by the OOM
//! killer when it touches the pages; under an address-space limit (`RLIMIT_AS`) the allocator
//! fails and Rust aborts. Either way the user's Python dies. An allocation whose size comes
//! from an argument rather than from the input's own size (a `d x d` matrix for a very wide
//! column, a batch assignment for `n` rows) is checked here first and refused with an error
//! that says what needed how much.

use std::fmt;

/// An allocation the process cannot make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocError {
    /// What the memory was for (e.g. "NormSim_2-D's d x d matrices for 100000-wide embeddings").
    pub what: String,
    pub bytes: u128,
    pub available: u128,
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} needed, only {} available", self.what, human(self.bytes), human(self.available))
    }
}

impl std::error::Error for AllocError {}

/// `bytes` in GiB/MiB/KiB, for messages.
pub fn human(bytes: u128) -> String {
    const K: f64 = 1024.0;
    let b = bytes as f64;
    if b >= K * K * K {
        format!("{:.1} GiB", b / (K * K * K))
    } else if b >= K * K {
        format!("{:.1} MiB", b / (K * K))
    } else {
        format!("{bytes} bytes")
    }
}

/// Sizes below this are never checked (reading `/proc` costs more than they do).
const SMALL: u128 = 64 << 20;

/// Bytes the process can still allocate: the smaller of the memory the system reports
/// available and the room left under the address-space limit. `None` where neither can be read
/// (other systems): then only the checked allocation itself guards.
pub fn available() -> Option<u128> {
    let sys = meminfo_available();
    let rlimit = address_space_left();
    match (sys, rlimit) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `Ok` when `bytes` can be allocated; an error naming `what` otherwise.
pub fn check(bytes: u128, what: impl FnOnce() -> String) -> Result<(), AllocError> {
    if bytes < SMALL {
        return Ok(());
    }
    match available() {
        Some(avail) if bytes > avail => Err(AllocError { what: what(), bytes, available: avail }),
        _ => Ok(()),
    }
}

fn meminfo_available() -> Option<u128> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Address space glibc reserves per malloc arena on 64-bit Linux (`HEAP_MAX_SIZE`).
const ARENA: u128 = 64 << 20;

fn address_space_left() -> Option<u128> {
    #[cfg(target_os = "linux")]
    {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into the struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) } != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
            return None;
        }
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmSize:"))?;
        let used: u128 = line.split_whitespace().nth(1)?.parse::<u128>().ok()? * 1024;
        // Each thread that allocates may make glibc reserve a 64 MiB arena of address space
        // (counted by RLIMIT_AS, never touched): room the computation's own bytes cannot use.
        let arenas = ARENA * (rayon::current_num_threads() as u128 + 1);
        Some(u128::from(lim.rlim_cur).saturating_sub(used + arenas))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_always_passes_and_absurd_fails() {
        assert!(check(1024, || unreachable!()).is_ok());
        let e = check(1 << 100, || "a test buffer".into()).unwrap_err();
        assert!(e.to_string().starts_with("a test buffer: "), "{e}");
        assert!(e.to_string().contains("GiB"), "{e}");
    }
}
