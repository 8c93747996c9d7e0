//! What a kernel call runs within: the worker threads ([`threads`]), cooperative cancellation
//! ([`interrupt`]) and the memory check before large allocations ([`memory`]).

pub mod interrupt;
pub mod memory;
pub mod threads;
