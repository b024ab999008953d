//! Arbitrary bytes, and damage done to valid encodings: bit flips, truncations, extensions,
//! cut and repeated ranges, and lengths set huge in each of the encodings lockfs reads
//! (bincode's fixed 8-byte and variable integers, protobuf varints, frame headers).

use rand::rngs::StdRng;
use rand::Rng;

/// Lengths a hostile or damaged input may declare.
const HUGE: [u64; 9] = [
    u64::MAX,
    u64::MAX - 7,
    1 << 63,
    1 << 62,
    1 << 40,
    1 << 32,
    u32::MAX as u64,
    1 << 31,
    1 << 24,
];

fn huge(rng: &mut StdRng) -> u64 {
    HUGE[rng.gen_range(0..HUGE.len())]
}

/// Up to 64 random bytes, now and then up to 1 KiB.
pub fn arbitrary(rng: &mut StdRng) -> Vec<u8> {
    let len = if rng.gen_ratio(1, 10) {
        rng.gen_range(0..1024)
    } else {
        rng.gen_range(0..64)
    };
    (0..len).map(|_| rng.gen()).collect()
}

/// The varint of protobuf.
pub fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Writes `bytes` at `at`, over what is there and beyond the end if need be.
pub fn overwrite(data: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    let end = at + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[at..end].copy_from_slice(bytes);
}

/// Damages `data` one to three times.
pub fn mutate(rng: &mut StdRng, data: &mut Vec<u8>) {
    for _ in 0..rng.gen_range(1..=3) {
        mutate_once(rng, data);
    }
}

fn mutate_once(rng: &mut StdRng, data: &mut Vec<u8>) {
    let len = data.len();
    let at = rng.gen_range(0..=len);
    match rng.gen_range(0..11) {
        0 if len > 0 => {
            let i = rng.gen_range(0..len);
            data[i] ^= 1 << rng.gen_range(0..8);
        }
        1 if len > 0 => {
            let i = rng.gen_range(0..len);
            data[i] = [0, 0x7f, 0x80, 0xff, rng.gen()][rng.gen_range(0..5)];
        }
        2 => data.truncate(at),
        3 => {
            let more = rng.gen_range(1..16);
            data.extend((0..more).map(|_| rng.gen::<u8>()));
        }
        4 => {
            let end = rng.gen_range(at..=len);
            data.drain(at..end);
        }
        5 => {
            let more: Vec<u8> = (0..rng.gen_range(1..8)).map(|_| rng.gen()).collect();
            data.splice(at..at, more);
        }
        // bincode's fixed-size lengths (log entries, snapshots): u64, little-endian.
        6 => overwrite(data, at, &huge(rng).to_le_bytes()),
        // bincode's variable-size lengths (state records): a marker byte, then u32 or u64.
        7 => {
            let mut v = if rng.gen() {
                vec![0xfc, 0, 0, 0, 0]
            } else {
                vec![0xfd, 0, 0, 0, 0, 0, 0, 0, 0]
            };
            let n = v.len() - 1;
            v[1..].copy_from_slice(&huge(rng).to_le_bytes()[..n]);
            overwrite(data, at, &v);
        }
        // protobuf lengths.
        8 => {
            let mut v = Vec::new();
            varint(huge(rng), &mut v);
            overwrite(data, at, &v);
        }
        // frame headers: u32, big-endian.
        9 => overwrite(data, at, &(huge(rng) as u32).to_be_bytes()),
        _ if len > 0 => {
            let start = rng.gen_range(0..len);
            let end = rng.gen_range(start..=len.min(start + 64));
            let copy = data[start..end].to_vec();
            data.splice(at..at, copy);
        }
        _ => data.push(rng.gen()),
    }
}

/// Where a case's input comes from.
pub enum Input {
    /// A valid encoding.
    Valid(Vec<u8>),
    /// Anything else: a damaged valid encoding, or arbitrary bytes.
    Damaged(Vec<u8>),
}

impl Input {
    /// Mostly valid encodings made by `valid` (the decoder must accept them), often damaged,
    /// sometimes arbitrary bytes.
    pub fn pick(rng: &mut StdRng, valid: impl FnOnce(&mut StdRng) -> Vec<u8>) -> Input {
        match rng.gen_range(0..20) {
            0 => Input::Damaged(arbitrary(rng)),
            1..=9 => {
                let mut bytes = valid(rng);
                mutate(rng, &mut bytes);
                Input::Damaged(bytes)
            }
            _ => Input::Valid(valid(rng)),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            Input::Valid(b) | Input::Damaged(b) => b,
        }
    }

    pub fn is_valid(&self) -> bool {
        matches!(self, Input::Valid(_))
    }
}
