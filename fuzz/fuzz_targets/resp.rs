//! Fuzzes the RESP2 reply parser of the broker (`edgecomet::broker::resp::parse`): what Redis
//! (or anything listening on the broker's address) sends the subscriber connection.
//!
//! Input layout: `[limit, bytes...]`; `limit` picks the bulk-string limit (0..=255 bytes, so
//! the limit is reached often).
//!
//! Checked on every input (any failure aborts the fuzzer):
//! - nothing panics;
//! - a complete reply uses at most the bytes given, at least 3, and has no bulk string over the
//!   limit, no array over `MAX_ARRAY`, no nesting over `MAX_DEPTH`;
//! - the outcome never changes once more bytes are appended: every prefix of a complete reply
//!   is `Ok(None)` or the same reply, an error stays an error; and a reply re-encoded as a
//!   command (when it is an array of bulk strings) parses back to itself.

#![no_main]

use edgecomet::broker::resp::{self, MAX_ARRAY, MAX_DEPTH, Value};
use libfuzzer_sys::fuzz_target;

fn check(v: &Value, limit: usize, depth: usize) {
    match v {
        Value::Bulk(Some(b)) => assert!(b.len() <= limit),
        Value::Array(Some(items)) => {
            assert!(items.len() <= MAX_ARRAY);
            assert!(depth < MAX_DEPTH);
            for i in items {
                check(i, limit, depth + 1);
            }
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&l, bytes)) = data.split_first() else {
        return;
    };
    let limit = l as usize;
    let whole = resp::parse(bytes, limit);
    match &whole {
        Ok(Some((v, used))) => {
            assert!(*used <= bytes.len() && *used >= 3, "used {used}");
            check(v, limit, 0);
            for cut in 0..*used {
                match resp::parse(&bytes[..cut], limit) {
                    Ok(None) => {}
                    other => panic!("prefix {cut} of a complete reply: {other:?}"),
                }
            }
            if let Value::Array(Some(items)) = v
                && !items.is_empty()
                && items.iter().all(|i| matches!(i, Value::Bulk(Some(_))))
            {
                let args: Vec<&[u8]> = items.iter().filter_map(Value::bytes).collect();
                let mut out = Vec::new();
                resp::command(&mut out, &args);
                assert_eq!(
                    resp::parse(&out, limit).unwrap().unwrap(),
                    (v.clone(), out.len())
                );
            }
        }
        Ok(None) => {
            // Incomplete: no shorter prefix may be complete or an error.
            for cut in 0..bytes.len() {
                assert_eq!(resp::parse(&bytes[..cut], limit), Ok(None), "prefix {cut}");
            }
        }
        Err(_) => {
            // An error stays an error with more bytes.
            let mut more = bytes.to_vec();
            more.extend_from_slice(b"\r\n+OK\r\n");
            assert!(resp::parse(&more, limit).is_err());
        }
    }
});
