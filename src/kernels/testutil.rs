//! Seeded test data and the kernels under test, for the kernels' unit tests.

use std::io::Write;
use std::sync::Once;

use super::engine::isa::{Isa, Kernel};
use super::matrix::{Matrix, Values};

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

/// `v` as a matrix of rows of `d` floats, every row valid.
pub fn matrix(v: &[f32], d: usize) -> Matrix<'_> {
    Matrix::new(Values::F32(v), v.len() / d, d, None).unwrap()
}

/// Seeded inputs of a score: `x` (`n x d`) and `t` (`m x d`), [`uniform`] with seeds `seed` and
/// `seed + 1`; [`Inputs::xm`] and [`Inputs::tm`] view them as matrices.
pub struct Inputs {
    pub x: Vec<f32>,
    pub t: Vec<f32>,
    pub d: usize,
}

impl Inputs {
    pub fn new(n: usize, m: usize, d: usize, seed: u64) -> Self {
        Self { x: uniform(n * d, seed), t: uniform(m * d, seed + 1), d }
    }

    pub fn xm(&self) -> Matrix<'_> {
        matrix(&self.x, self.d)
    }

    pub fn tm(&self) -> Matrix<'_> {
        matrix(&self.t, self.d)
    }
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

/// [`kernels`] but the portable one: the fused kernels, which agree bit for bit.
pub fn fused_kernels() -> Vec<Kernel> {
    kernels().into_iter().filter(|k| k.isa() != Isa::Portable).collect()
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
