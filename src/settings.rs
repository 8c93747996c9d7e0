//! Every environment variable polars-curate reads, read once per process.
//!
//! [`get`] reads them all at its first call (a `OnceLock`) into typed fields, and every other
//! module asks it: no other code reads the environment. A variable set after the first use has no
//! effect; set it before the process (or a `fork` child's parent) first runs a kernel.
//!
//! | variable | field | unset or unusable |
//! | --- | --- | --- |
//! | `POLARS_CURATE_KERNEL` | [`Settings::kernel`] | the best kernel this CPU runs |
//! | `POLARS_MAX_THREADS` | [`Settings::max_threads`] | one worker thread per core |
//! | `POLARS_CURATE_TARGET_CACHE_MB` | [`Settings::target_cache_bytes`] | [`TARGET_CACHE_MB`] MiB |
//! | `POLARS_CURATE_TARGET_IDLE_S` | [`Settings::target_idle`] | [`TARGET_IDLE`] |
//!
//! Pure Rust (no Polars, no PyO3): the kernels read it too.

use std::num::NonZeroUsize;
use std::sync::OnceLock;
use std::time::Duration;

/// MiB of prepared NormSim targets cached when `POLARS_CURATE_TARGET_CACHE_MB` is unset.
pub const TARGET_CACHE_MB: usize = 2048;
/// How long a prepared target may go unused before it is released, when
/// `POLARS_CURATE_TARGET_IDLE_S` is unset.
pub const TARGET_IDLE: Duration = Duration::from_secs(60);

/// The process's settings (see the module notes for the variables and defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `POLARS_CURATE_KERNEL`, as given (`None`: unset, or not Unicode). The kernel selection
    /// (`Kernel::selected`) reads it: empty or `auto` is the best kernel this CPU runs, a name it
    /// cannot run is an error naming the value.
    pub kernel: Option<String>,
    /// `POLARS_MAX_THREADS` when it is a positive integer (spaces around it ignored): the size of
    /// the plugin's thread pool unless `set_threads` asks for another. `None`: one per core.
    pub max_threads: Option<NonZeroUsize>,
    /// `POLARS_CURATE_TARGET_CACHE_MB` (a whole number of MiB) in bytes: the most prepared
    /// NormSim targets the cache keeps. Default [`TARGET_CACHE_MB`] MiB.
    pub target_cache_bytes: usize,
    /// `POLARS_CURATE_TARGET_IDLE_S` (seconds, fractions allowed, `>= 0`): a cached target no
    /// query has used for this long is released. Default [`TARGET_IDLE`]; a number too large
    /// for a `Duration` means never.
    pub target_idle: Duration,
}

impl Settings {
    /// The settings that `var` gives, `var(name)` being the variable's value (`None`: unset).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let max_threads = var("POLARS_MAX_THREADS")
            .and_then(|v| v.trim().parse::<usize>().ok())
            .and_then(NonZeroUsize::new);
        let target_cache_bytes = var("POLARS_CURATE_TARGET_CACHE_MB")
            .and_then(|v| v.trim().parse::<usize>().ok())
            .map_or(TARGET_CACHE_MB << 20, |mb| mb << 20);
        let target_idle = var("POLARS_CURATE_TARGET_IDLE_S")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map_or(TARGET_IDLE, |s| Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX));
        Self { kernel: var("POLARS_CURATE_KERNEL"), max_threads, target_cache_bytes, target_idle }
    }
}

/// This process's settings, read from the environment at the first call.
pub fn get() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| Settings::from_vars(|name| std::env::var(name).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Settings {
        Settings::from_vars(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn defaults_when_unset_or_unusable() {
        let want = Settings {
            kernel: None,
            max_threads: None,
            target_cache_bytes: 2048 << 20,
            target_idle: Duration::from_secs(60),
        };
        assert_eq!(from(&[]), want);
        let bad = from(&[
            ("POLARS_MAX_THREADS", "0"),
            ("POLARS_CURATE_TARGET_CACHE_MB", "-1"),
            ("POLARS_CURATE_TARGET_IDLE_S", "NaN"),
        ]);
        assert_eq!(bad, want);
        assert_eq!(from(&[("POLARS_MAX_THREADS", "two")]).max_threads, None);
        assert_eq!(from(&[("POLARS_CURATE_TARGET_IDLE_S", "-0.5")]).target_idle, TARGET_IDLE);
    }

    #[test]
    fn values_are_parsed() {
        let s = from(&[
            ("POLARS_CURATE_KERNEL", " avx2 "),
            ("POLARS_MAX_THREADS", " 3 "),
            ("POLARS_CURATE_TARGET_CACHE_MB", "1"),
            ("POLARS_CURATE_TARGET_IDLE_S", "0.5"),
        ]);
        assert_eq!(s.kernel.as_deref(), Some(" avx2 "));
        assert_eq!(s.max_threads, NonZeroUsize::new(3));
        assert_eq!(s.target_cache_bytes, 1 << 20);
        assert_eq!(s.target_idle, Duration::from_millis(500));
        assert_eq!(from(&[("POLARS_CURATE_TARGET_IDLE_S", "1e300")]).target_idle, Duration::MAX);
    }

    #[test]
    fn read_once() {
        assert!(std::ptr::eq(get(), get()));
    }
}
