//! Seeded test data and the kernels under test, for the kernels' unit tests.

use std::io::Write;
use std::sync::Once;

use super::engine::isa::{Isa, Kernel};

/// `n` values uniform in `[-0.5, 0.5)` from a 64-bit LCG seeded with `seed` (portable, fast,
/// good enough for test inputs).
pub fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// Every kernel this machine runs (the tests run each). The first call reports, by name, the
/// kernels that are skipped here and why, on the test binary's stderr (written directly, so the
/// test harness does not swallow it).
pub fn kernels() -> Vec<Kernel> {
    static REPORT: Once = Once::new();
    REPORT.call_once(|| {
        let mut lines = String::new();
        for isa in Isa::ALL {
            match Kernel::new(isa) {
                Ok(_) => lines += &format!("kernel tests: {isa} runs on this machine\n"),
                Err(e) => lines += &format!("kernel tests: SKIPPED {isa}: {e}\n"),
            }
        }
        let _ = std::io::stderr().write_all(lines.as_bytes());
    });
    Kernel::available()
}

/// `each_kernel!(check)`: runs the generic `check(k)` with the witness of every kernel this
/// machine runs (see [`kernels`]), compiled once per kernel type.
macro_rules! each_kernel {
    ($check:expr) => {
        for kernel in $crate::kernels::testutil::kernels() {
            $crate::kernels::engine::dispatch::with_kernel!(kernel, k => $check(k));
        }
    };
}
pub(crate) use each_kernel;

/// Asserts `|got - want| <= tol` (a NaN fails), naming the case with `what()` when it does not hold.
#[track_caller]
pub fn assert_close(got: f64, want: f64, tol: f64, what: impl FnOnce() -> String) {
    assert!((got - want).abs() <= tol, "{}: {got} vs {want}", what());
}
