//! Fuzzing support for the tests: what a decoder allocates (`alloc`).

mod alloc;

pub(crate) use alloc::largest_during as largest_allocation;
