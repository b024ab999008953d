//! The one place where backend errors become what the kernel hands to the caller.
//!
//! Backends already speak Linux errno values, so the mapping is nearly the identity. The one
//! exception is the session's expiry: the cluster says EKEYEXPIRED, and a local filesystem
//! whose storage went away says EIO, which is what every tool expects to see on a dead handle.

use super::backend::Errno;

/// The errno to answer the kernel with.
pub fn to_kernel(err: Errno) -> fuser::Errno {
    if err == Errno::EKEYEXPIRED {
        return fuser::Errno::EIO;
    }
    fuser::Errno::from_i32(err.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_becomes_eio_and_the_rest_passes_through() {
        assert_eq!(to_kernel(Errno::EKEYEXPIRED).code(), libc::EIO);
        assert_eq!(to_kernel(Errno::EFBIG).code(), libc::EFBIG);
        assert_eq!(to_kernel(Errno::EDQUOT).code(), libc::EDQUOT);
        assert_eq!(to_kernel(Errno::ENOENT).code(), libc::ENOENT);
        assert_eq!(to_kernel(Errno(0)).code(), libc::EIO);
    }
}
