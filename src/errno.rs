//! The Linux errno numbers lockfs speaks, in one place: the state machine's errors map to them
//! (`state::StateError::errno`), the wire carries them (`proto/lockfs.proto`, message `Error`),
//! the servers refuse with them and the clients act on them. Spelled out rather than taken
//! from libc so that the state layer and the wire depend on nothing platform-specific; a test
//! checks each against libc.

pub const EPERM: u32 = 1;
pub const ENOENT: u32 = 2;
pub const EIO: u32 = 5;
pub const EBADF: u32 = 9;
/// No leader here, or not yet: try again (elsewhere).
pub const EAGAIN: u32 = 11;
pub const EACCES: u32 = 13;
pub const EBUSY: u32 = 16;
pub const EEXIST: u32 = 17;
pub const EXDEV: u32 = 18;
pub const ENOTDIR: u32 = 20;
pub const EISDIR: u32 = 21;
pub const EINVAL: u32 = 22;
pub const EFBIG: u32 = 27;
pub const EMLINK: u32 = 31;
pub const ENAMETOOLONG: u32 = 36;
pub const ENOLCK: u32 = 37;
pub const ENOTEMPTY: u32 = 39;
pub const EPROTO: u32 = 71;
pub const EMSGSIZE: u32 = 90;
/// A server is too busy to take the request now: try again later.
pub const ENOBUFS: u32 = 105;
/// A compare-and-set found another generation.
pub const ESTALE: u32 = 116;
/// A cluster-wide quota is reached.
pub const EDQUOT: u32 = 122;
/// The session has ended (expired, closed, or never existed).
pub const EKEYEXPIRED: u32 = 127;

#[cfg(test)]
mod tests {
    #[test]
    fn every_number_is_linuxs() {
        let ours = [
            (super::EPERM, libc::EPERM),
            (super::ENOENT, libc::ENOENT),
            (super::EIO, libc::EIO),
            (super::EBADF, libc::EBADF),
            (super::EAGAIN, libc::EAGAIN),
            (super::EACCES, libc::EACCES),
            (super::EBUSY, libc::EBUSY),
            (super::EEXIST, libc::EEXIST),
            (super::EXDEV, libc::EXDEV),
            (super::ENOTDIR, libc::ENOTDIR),
            (super::EISDIR, libc::EISDIR),
            (super::EINVAL, libc::EINVAL),
            (super::EFBIG, libc::EFBIG),
            (super::EMLINK, libc::EMLINK),
            (super::ENAMETOOLONG, libc::ENAMETOOLONG),
            (super::ENOLCK, libc::ENOLCK),
            (super::ENOTEMPTY, libc::ENOTEMPTY),
            (super::EPROTO, libc::EPROTO),
            (super::EMSGSIZE, libc::EMSGSIZE),
            (super::ENOBUFS, libc::ENOBUFS),
            (super::ESTALE, libc::ESTALE),
            (super::EDQUOT, libc::EDQUOT),
            (super::EKEYEXPIRED, libc::EKEYEXPIRED),
        ];
        for (mine, linux) in ours {
            assert_eq!(mine as i32, linux);
        }
    }
}
