//! Random protobuf encodings made from the messages' own descriptors, so every field of every
//! message (lockfs's and raft-rs's) gets values without a generator written per message.
//!
//! A valid encoding sets some fields (one member of each oneof, a few items of repeated
//! fields, packed or not), with values drawn from the edges of their types and from the
//! strings lockfs cares about (paths and names), and now and then an unknown field. A flawed
//! one also lies: a length that says more or less than follows, or a field under the wrong
//! wire type.

use std::collections::HashMap;

use protobuf::descriptor::{
    DescriptorProto, FieldDescriptorProto, FieldDescriptorProto_Label as Label,
    FieldDescriptorProto_Type as Type, FileDescriptorProto,
};
use rand::rngs::StdRng;
use rand::Rng;

use super::mutate::varint;

/// Messages nest at most this deep (raft-rs's `Message` → `Snapshot` → metadata → conf state).
const MAX_DEPTH: usize = 5;

const STRINGS: [&str; 14] = [
    "",
    "/",
    "/a",
    "/a/b",
    "/a/b/c",
    "a",
    "b",
    "..",
    ".",
    "//a//",
    "a/b",
    "\0",
    "\u{e9}t\u{e9}",
    "127.0.0.1:7000",
];

pub struct Schema {
    messages: HashMap<String, &'static DescriptorProto>,
    enums: HashMap<String, Vec<i32>>,
}

impl Schema {
    pub fn of(files: &[&'static FileDescriptorProto]) -> Schema {
        let mut schema = Schema {
            messages: HashMap::new(),
            enums: HashMap::new(),
        };
        for file in files {
            let scope = format!(".{}", file.get_package());
            for e in file.get_enum_type() {
                let values = e.get_value().iter().map(|v| v.get_number()).collect();
                schema
                    .enums
                    .insert(format!("{scope}.{}", e.get_name()), values);
            }
            for m in file.get_message_type() {
                schema.add(&scope, m);
            }
        }
        schema
    }

    fn add(&mut self, scope: &str, m: &'static DescriptorProto) {
        let name = format!("{scope}.{}", m.get_name());
        for e in m.get_enum_type() {
            let values = e.get_value().iter().map(|v| v.get_number()).collect();
            self.enums
                .insert(format!("{name}.{}", e.get_name()), values);
        }
        for nested in m.get_nested_type() {
            self.add(&name, nested);
        }
        self.messages.insert(name, m);
    }

    /// A random encoding of the message `name` (such as ".lockfs.Request"); with `flawed`, one
    /// that may lie about lengths and wire types.
    pub fn encode(&self, rng: &mut StdRng, name: &str, flawed: bool) -> Vec<u8> {
        let mut out = Vec::new();
        self.message(rng, name, 0, flawed, &mut out);
        out
    }

    fn message(&self, rng: &mut StdRng, name: &str, depth: usize, flawed: bool, out: &mut Vec<u8>) {
        let m = self
            .messages
            .get(name)
            .unwrap_or_else(|| panic!("no message {name} in the schema"));
        // One member of each oneof, or none.
        let chosen: Vec<Option<i32>> = (0..m.get_oneof_decl().len() as i32)
            .map(|oneof| {
                let members: Vec<i32> = m
                    .get_field()
                    .iter()
                    .filter(|f| f.has_oneof_index() && f.get_oneof_index() == oneof)
                    .map(|f| f.get_number())
                    .collect();
                (!members.is_empty() && rng.gen_ratio(9, 10))
                    .then(|| members[rng.gen_range(0..members.len())])
            })
            .collect();
        for f in m.get_field() {
            let present = if f.has_oneof_index() {
                chosen[f.get_oneof_index() as usize] == Some(f.get_number()) || rng.gen_ratio(1, 50)
            } else {
                rng.gen_ratio(2, 3)
            };
            if !present {
                continue;
            }
            if f.get_label() == Label::LABEL_REPEATED {
                self.repeated(rng, f, depth, flawed, out);
            } else {
                self.field(rng, f, depth, flawed, out);
            }
        }
        if rng.gen_ratio(1, 20) {
            // An unknown field, which a decoder keeps or skips.
            varint(u64::from(rng.gen_range(1000u32..2000)) << 3, out);
            varint(rng.gen(), out);
        }
    }

    fn repeated(
        &self,
        rng: &mut StdRng,
        f: &FieldDescriptorProto,
        depth: usize,
        flawed: bool,
        out: &mut Vec<u8>,
    ) {
        let count = rng.gen_range(0..5);
        let packable = !matches!(
            f.get_field_type(),
            Type::TYPE_STRING | Type::TYPE_BYTES | Type::TYPE_MESSAGE | Type::TYPE_GROUP
        );
        if packable && rng.gen() {
            let mut items = Vec::new();
            for _ in 0..count {
                self.scalar(rng, f, flawed, &mut items);
            }
            self.delimited(rng, f.get_number(), &items, flawed, out);
        } else {
            for _ in 0..count {
                self.field(rng, f, depth, flawed, out);
            }
        }
    }

    fn field(
        &self,
        rng: &mut StdRng,
        f: &FieldDescriptorProto,
        depth: usize,
        flawed: bool,
        out: &mut Vec<u8>,
    ) {
        let number = f.get_number();
        match f.get_field_type() {
            Type::TYPE_MESSAGE => {
                if depth >= MAX_DEPTH {
                    return;
                }
                let mut inner = Vec::new();
                self.message(rng, f.get_type_name(), depth + 1, flawed, &mut inner);
                self.delimited(rng, number, &inner, flawed, out);
            }
            Type::TYPE_STRING => {
                let s = string(rng);
                self.delimited(rng, number, s.as_bytes(), flawed, out);
            }
            Type::TYPE_BYTES => {
                let len = [0, 1, 8, 16, 17, rng.gen_range(0..300)][rng.gen_range(0..6)];
                let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                self.delimited(rng, number, &bytes, flawed, out);
            }
            Type::TYPE_GROUP => {}
            _ => {
                let mut value = Vec::new();
                let wire = self.scalar(rng, f, flawed, &mut value);
                let wire = if flawed && rng.gen_ratio(1, 10) {
                    [0, 1, 2, 5, 3, 7][rng.gen_range(0..6)]
                } else {
                    wire
                };
                tag(number, wire, out);
                out.extend_from_slice(&value);
            }
        }
    }

    /// Appends a value of the scalar field `f`; returns its wire type. A flawed enum may be
    /// out of range (which raft-rs's messages refuse).
    fn scalar(
        &self,
        rng: &mut StdRng,
        f: &FieldDescriptorProto,
        flawed: bool,
        out: &mut Vec<u8>,
    ) -> u64 {
        match f.get_field_type() {
            Type::TYPE_BOOL => {
                varint(rng.gen_range(0..2), out);
                0
            }
            Type::TYPE_ENUM => {
                let values = &self.enums[f.get_type_name()];
                let v = if flawed && rng.gen_ratio(1, 5) {
                    rng.gen_range(-2..100)
                } else {
                    values[rng.gen_range(0..values.len())]
                };
                varint(v as i64 as u64, out);
                0
            }
            Type::TYPE_UINT32 | Type::TYPE_FIXED32 => {
                let v = number(rng) as u32;
                fixed_or_varint(f, u64::from(v), out)
            }
            Type::TYPE_INT32 | Type::TYPE_SINT32 | Type::TYPE_SFIXED32 => {
                let v = number(rng) as i32;
                fixed_or_varint(f, v as i64 as u64, out)
            }
            _ => fixed_or_varint(f, number(rng), out),
        }
    }

    /// A length-delimited field; a flawed one may declare a wrong length.
    fn delimited(
        &self,
        rng: &mut StdRng,
        number: i32,
        bytes: &[u8],
        flawed: bool,
        out: &mut Vec<u8>,
    ) {
        tag(number, 2, out);
        let len = bytes.len() as u64;
        let declared = if flawed && rng.gen_ratio(1, 8) {
            [len + 1, len.saturating_sub(1), 1 << 31, 1 << 62, u64::MAX][rng.gen_range(0..5)]
        } else {
            len
        };
        varint(declared, out);
        out.extend_from_slice(bytes);
    }
}

fn tag(number: i32, wire: u64, out: &mut Vec<u8>) {
    varint(((number as u64) << 3) | wire, out);
}

fn fixed_or_varint(f: &FieldDescriptorProto, v: u64, out: &mut Vec<u8>) -> u64 {
    match f.get_field_type() {
        Type::TYPE_FIXED64 | Type::TYPE_SFIXED64 | Type::TYPE_DOUBLE => {
            out.extend_from_slice(&v.to_le_bytes());
            1
        }
        Type::TYPE_FIXED32 | Type::TYPE_SFIXED32 | Type::TYPE_FLOAT => {
            out.extend_from_slice(&(v as u32).to_le_bytes());
            5
        }
        Type::TYPE_SINT32 | Type::TYPE_SINT64 => {
            varint((v << 1) ^ ((v as i64 >> 63) as u64), out);
            0
        }
        _ => {
            varint(v, out);
            0
        }
    }
}

/// A number from the edges: small ones (instance numbers, ids, offsets that name something),
/// the limits of each width, and anything.
fn number(rng: &mut StdRng) -> u64 {
    match rng.gen_range(0..10) {
        0..=3 => rng.gen_range(0..8),
        4 => [u64::MAX, u64::MAX - 1, 1 << 63, u32::MAX as u64, 1 << 32][rng.gen_range(0..5)],
        5 => rng.gen_range(0..5000),
        6 => 0o7777 & rng.gen::<u64>(),
        _ => rng.gen(),
    }
}

fn string(rng: &mut StdRng) -> String {
    match rng.gen_range(0..10) {
        0..=5 => STRINGS[rng.gen_range(0..STRINGS.len())].to_string(),
        6 => "n".repeat([255, 256, 4096, 4097][rng.gen_range(0..4)]),
        _ => (0..rng.gen_range(0..12))
            .map(|_| match rng.gen_range(0..4) {
                0 => '/',
                1 => char::from(rng.gen_range(b'a'..=b'd')),
                _ => rng.gen::<char>(),
            })
            .collect(),
    }
}
