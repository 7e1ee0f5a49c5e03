// A Rust test gear: data.op says what to do, to exercise the ABI and WASI from Rust (the ops of
// test/gears-c/probe.c).
#[path = "../../wasm-gears/sdk-rust/fluxrig.rs"]
mod fluxrig;

use fluxrig::{Answer, Msg};

fn handle<'a>(msg: &Msg<'a>) -> Answer<'a> {
    let edit = msg.edit();
    let edit = match msg.text("op").unwrap_or("") {
        "reject" => return Answer::Reject("rust says no".to_string()),
        "drop" => return Answer::Drop,
        "trap" => panic!("asked to trap"),
        "exit" => std::process::exit(3),
        "fanout" => {
            let n = msg.number("n").unwrap_or(2.0) as i64;
            return Answer::Fanout((0..n.min(8)).map(|i| msg.edit().set_int("copy", i)).collect());
        }
        "kv" => {
            let (key, value) = (msg.text("key").unwrap_or(""), msg.text("value").unwrap_or(""));
            fluxrig::kv_put(key, value.as_bytes());
            let back = fluxrig::kv_get(key).unwrap_or_default();
            edit.set_text("read_back", &String::from_utf8_lossy(&back))
        }
        "print" => {
            let text = msg.text("text").unwrap_or("");
            println!("{}", text);
            eprintln!("stderr: {}", text);
            edit
        }
        "env" => edit.set_text("value", &std::env::var(msg.text("name").unwrap_or("")).unwrap_or_else(|_| "(unset)".to_string())),
        "read" => match std::fs::read_to_string(msg.text("path").unwrap_or("")) {
            Ok(text) => edit.set_text("text", text.lines().next().unwrap_or("")),
            Err(err) => edit.set_int("errno", err.raw_os_error().unwrap_or(-1) as i64),
        },
        "write" => match std::fs::write(msg.text("path").unwrap_or(""), msg.text("text").unwrap_or("")) {
            Ok(()) => edit.set_text("written", "yes"),
            Err(err) => edit.set_int("errno", err.raw_os_error().unwrap_or(-1) as i64),
        },
        _ => edit,
    };
    Answer::Ok(edit.set_text("seen", "rust"))
}

crate::gear!(handle);
