//! fluxrig's gear ABI for Rust (docs/wasm-abi.md, docs/writing-gears.md "In Rust"): the exports
//! the host calls (alloc, free), the host functions (log, flux_emit, flux_kv_get, flux_kv_put),
//! and enough CBOR to read a fluxMsg's data and meta and to answer with it changed, rejected,
//! dropped or fanned out. No crates: a gear includes this file as a module and is built by rustc
//! alone (Debian's rustc with libstd-rust-dev-wasm32):
//!
//!   #[path = "../sdk-rust/fluxrig.rs"] mod fluxrig;
//!   crate::gear!(handle);
//!   fn handle(msg: &fluxrig::Msg) -> fluxrig::Answer { ... }
//!
//!   rustc --edition 2021 --target wasm32-wasi --crate-type cdylib -O -C link-arg=--export=free gear.rs -o gear.wasm
//!
//! The `free` the host calls is libc's own (Rust's allocator on wasm32-wasi is libc's malloc):
//! a function of ours named free would clash with it, hence the link argument that exports it.
//!
//! println! and eprintln! become the gear's log lines (info and warn) through WASI; a panic
//! traps, and the host fails that message only.
#![allow(dead_code)]

mod host {
    #[link(wasm_import_module = "env")]
    extern "C" {
        pub fn log(level: i32, ptr: *const u8, len: i32);
        pub fn flux_emit(ptr: *const u8, len: i32) -> i32;
        pub fn flux_kv_get(ptr: *const u8, len: i32) -> i64;
        pub fn flux_kv_put(kp: *const u8, kl: i32, vp: *const u8, vl: i32) -> i32;
    }
    extern "C" {
        pub fn malloc(size: usize) -> *mut u8;
        pub fn free(ptr: *mut u8);
    }
}

#[no_mangle]
pub extern "C" fn alloc(len: i32) -> *mut u8 {
    unsafe { host::malloc(len.max(1) as usize) }
}

pub const DEBUG: i32 = 1;
pub const INFO: i32 = 2;
pub const WARN: i32 = 3;
pub const ERROR: i32 = 4;

pub fn log(level: i32, text: &str) {
    unsafe { host::log(level, text.as_ptr(), text.len() as i32) }
}

// ---- reading CBOR ------------------------------------------------------------------------------

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// An item's head: major type, argument, and the additional-info bits (floats need them).
    fn head(&mut self) -> Option<(u8, u64, u8)> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        let info = b & 0x1f;
        let n = match info {
            0..=23 => return Some((b >> 5, info as u64, info)),
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            _ => return None,
        };
        let bytes = self.bytes.get(self.at..self.at + n)?;
        self.at += n;
        Some((b >> 5, bytes.iter().fold(0u64, |v, b| v << 8 | *b as u64), info))
    }

    fn skip(&mut self, depth: u32) -> Option<()> {
        if depth > 32 {
            return None;
        }
        let (major, arg, _) = self.head()?;
        match major {
            2 | 3 => {
                self.bytes.get(self.at..self.at + arg as usize)?;
                self.at += arg as usize;
            }
            4 => (0..arg).try_for_each(|_| self.skip(depth + 1))?,
            5 => (0..2 * arg).try_for_each(|_| self.skip(depth + 1))?,
            6 => self.skip(depth + 1)?,
            _ => {}
        }
        Some(())
    }

    fn text(&mut self) -> Option<&'a str> {
        let (major, n, _) = self.head()?;
        if major != 3 {
            return None;
        }
        let bytes = self.bytes.get(self.at..self.at + n as usize)?;
        self.at += n as usize;
        std::str::from_utf8(bytes).ok()
    }

    /// Each (key, encoded value) of the map at the reader.
    fn entries(&mut self) -> Option<Vec<(&'a [u8], &'a [u8])>> {
        let (major, count, _) = self.head()?;
        if major != 5 {
            return None;
        }
        let mut out = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let k = self.at;
            self.skip(0)?;
            let v = self.at;
            self.skip(0)?;
            out.push((&self.bytes[k..v], &self.bytes[v..self.at]));
        }
        Some(out)
    }
}

fn key_is(key: &[u8], name: &str) -> bool {
    Reader { bytes: key, at: 0 }.text() == Some(name)
}

/// The value under text key `name`, found by walking the map in place (no allocation: a gear
/// looks up several fields per message).
fn lookup<'a>(map: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let mut r = Reader { bytes: map, at: 0 };
    let (major, count, _) = r.head()?;
    if major != 5 {
        return None;
    }
    for _ in 0..count {
        let k = r.at;
        r.skip(0)?;
        let v = r.at;
        r.skip(0)?;
        if key_is(&map[k..v], name) {
            return Some(&map[v..r.at]);
        }
    }
    None
}

/// A message as the host handed it.
pub struct Msg<'a> {
    whole: &'a [u8],
    data: &'a [u8],
}

impl<'a> Msg<'a> {
    pub fn read(bytes: &'a [u8]) -> Option<Msg<'a>> {
        Some(Msg { whole: bytes, data: lookup(bytes, "data")? })
    }

    pub fn has(&self, key: &str) -> bool {
        lookup(self.data, key).is_some()
    }

    /// A number field of data (integer or float).
    pub fn number(&self, key: &str) -> Option<f64> {
        let value = lookup(self.data, key)?;
        let (major, arg, info) = Reader { bytes: value, at: 0 }.head()?;
        match (major, info) {
            (0, _) => Some(arg as f64),
            (1, _) => Some(-1.0 - arg as f64),
            (7, 27) => Some(f64::from_bits(arg)),
            (7, 26) => Some(f32::from_bits(arg as u32) as f64),
            _ => None,
        }
    }

    /// A text field of data.
    pub fn text(&self, key: &str) -> Option<&'a str> {
        Reader { bytes: lookup(self.data, key)?, at: 0 }.text()
    }

    /// The start of an answer that passes this message on, changed.
    pub fn edit(&self) -> Edit<'a> {
        Edit { whole: self.whole, data: Vec::new(), meta: Vec::new() }
    }
}

// ---- writing CBOR ------------------------------------------------------------------------------

fn put_head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    match arg {
        0..=23 => out.push(m | arg as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, arg as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(arg as u16).to_be_bytes())
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(arg as u32).to_be_bytes())
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&arg.to_be_bytes())
        }
    }
}

fn put_text(out: &mut Vec<u8>, s: &str) {
    put_head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A value for a data field.
pub enum Value {
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Int(i) if *i >= 0 => put_head(out, 0, *i as u64),
        Value::Int(i) => put_head(out, 1, (-1 - *i) as u64),
        Value::Float(f) => {
            out.push(0xfb);
            out.extend_from_slice(&f.to_bits().to_be_bytes())
        }
        Value::Text(s) => put_text(out, s),
        Value::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
    }
}

/// Changes to one message: data and meta fields to set; everything else is copied as it came.
pub struct Edit<'a> {
    whole: &'a [u8],
    data: Vec<(String, Value)>,
    meta: Vec<(String, String)>,
}

impl<'a> Edit<'a> {
    pub fn set(mut self, key: &str, value: Value) -> Self {
        self.data.retain(|(k, _)| k != key);
        self.data.push((key.to_string(), value));
        self
    }
    pub fn set_int(self, key: &str, v: i64) -> Self {
        self.set(key, Value::Int(v))
    }
    pub fn set_float(self, key: &str, v: f64) -> Self {
        self.set(key, Value::Float(v))
    }
    pub fn set_text(self, key: &str, v: &str) -> Self {
        self.set(key, Value::Text(v.to_string()))
    }
    /// Meta values are text.
    pub fn set_meta(mut self, key: &str, v: &str) -> Self {
        self.meta.retain(|(k, _)| k != key);
        self.meta.push((key.to_string(), v.to_string()));
        self
    }

    fn write(&self, out: &mut Vec<u8>) {
        let entries = Reader { bytes: self.whole, at: 0 }.entries().unwrap_or_default();
        put_head(out, 5, entries.len() as u64);
        for (k, v) in entries {
            out.extend_from_slice(k);
            if key_is(k, "data") {
                write_map(out, v, &self.data, put_value);
            } else if key_is(k, "meta") {
                write_map(out, v, &self.meta, |out, text: &String| put_text(out, text));
            } else {
                out.extend_from_slice(v);
            }
        }
    }
}

/// Writes `map` with `edits` applied: entries they replace are left out, then the edits follow.
fn write_map<V>(out: &mut Vec<u8>, map: &[u8], edits: &[(String, V)], put: impl Fn(&mut Vec<u8>, &V)) {
    let fields = Reader { bytes: map, at: 0 }.entries().unwrap_or_default();
    let kept: Vec<_> = fields.into_iter().filter(|(k, _)| !edits.iter().any(|(name, _)| key_is(k, name))).collect();
    put_head(out, 5, (kept.len() + edits.len()) as u64);
    for (k, v) in kept {
        out.extend_from_slice(k);
        out.extend_from_slice(v);
    }
    for (name, value) in edits {
        put_text(out, name);
        put(out, value);
    }
}

/// What a gear decides for one message.
pub enum Answer<'a> {
    /// Pass the message on, changed.
    Ok(Edit<'a>),
    /// Refuse it; a FLUXAR caller gets the reason.
    Reject(String),
    /// Discard it (counted by the host).
    Drop,
    /// Pass several messages on at once.
    Fanout(Vec<Edit<'a>>),
}

/// The answer's bytes as the host reads them: ptr << 32 | len, in a malloc'd buffer the host
/// hands back to free.
fn give(bytes: Vec<u8>) -> i64 {
    let len = bytes.len();
    let ptr = unsafe { host::malloc(len.max(1)) };
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, len) };
    ((ptr as usize as u64) << 32 | len as u64) as i64
}

pub fn encode(answer: Answer) -> i64 {
    let mut out = Vec::with_capacity(256);
    match answer {
        Answer::Ok(edit) => edit.write(&mut out),
        Answer::Drop => return 0,
        Answer::Reject(reason) => {
            put_head(&mut out, 5, 2);
            put_text(&mut out, "status");
            put_head(&mut out, 0, 1);
            put_text(&mut out, "reason");
            put_text(&mut out, &reason);
        }
        Answer::Fanout(edits) => {
            put_head(&mut out, 5, 2);
            put_text(&mut out, "status");
            put_head(&mut out, 0, 0);
            put_text(&mut out, "msgs");
            put_head(&mut out, 4, edits.len() as u64);
            for e in &edits {
                e.write(&mut out);
            }
        }
    }
    give(out)
}

/// Sends a message out of the gear now, before the answer; true when the host took it.
pub fn emit(edit: &Edit) -> bool {
    let mut out = Vec::new();
    edit.write(&mut out);
    unsafe { host::flux_emit(out.as_ptr(), out.len() as i32) == 0 }
}

// ---- KV (the gear needs allow_kv: true) --------------------------------------------------------

pub fn kv_get(key: &str) -> Option<Vec<u8>> {
    let packed = unsafe { host::flux_kv_get(key.as_ptr(), key.len() as i32) } as u64;
    if packed == 0 {
        return None;
    }
    let (ptr, len) = ((packed >> 32) as usize as *mut u8, (packed & 0xffff_ffff) as usize);
    // The host put it in a buffer from our alloc: copy it out and give that buffer back.
    let value = unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec();
    unsafe { host::free(ptr) };
    Some(value)
}

pub fn kv_put(key: &str, value: &[u8]) -> bool {
    unsafe { host::flux_kv_put(key.as_ptr(), key.len() as i32, value.as_ptr(), value.len() as i32) == 0 }
}

/// Defines `process`: the host hands it a fluxMsg, `$handle` answers.
#[macro_export]
macro_rules! gear {
    ($handle:path) => {
        #[no_mangle]
        pub unsafe extern "C" fn process(ptr: *const u8, len: i32) -> i64 {
            let bytes = std::slice::from_raw_parts(ptr, len as usize);
            match fluxrig::Msg::read(bytes) {
                Some(msg) => fluxrig::encode($handle(&msg)),
                None => fluxrig::encode(fluxrig::Answer::Reject("not a fluxMsg with data".to_string())),
            }
        }
    };
}
