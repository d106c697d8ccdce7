//! An incremental parser for a Server-Sent Events stream (the body after the response head), as
//! an `EventSource` reads it: lines end with LF, CR or CRLF; `data:` lines of one event are
//! joined with "\n"; `event:` names the type (default `message`); `id:` is the event's id;
//! `retry:`, unknown fields and comments (`:` lines) are ignored; a blank line dispatches.
//!
//! The parser keeps no state between calls but one bit (the previous call ended on a CR, so a
//! leading LF completes that line break). It consumes only what it is done with: complete events
//! and lines outside any event. An event whose blank line has not arrived yet is left
//! unconsumed and parsed again, whole, on the next call, so an idle connection holds no
//! leftover once its last event (or heartbeat comment) is complete.

/// The type of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `message` (or no `event:` field): a published message.
    Message,
    /// `event: gap`: the server reports messages it can no longer deliver.
    Gap,
    /// Any other type.
    Other,
}

/// One dispatched event. `data` is the `data:` lines joined with "\n".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    pub kind: Kind,
    pub id: Option<&'a [u8]>,
    pub data: &'a [u8],
}

/// Parses the events completed in `buf` (the stream after what earlier calls consumed) and calls
/// `f` for each. `after_cr` says the previous call's consumed bytes ended with a CR; it is
/// updated. `data` is scratch space for joining data lines. Returns the bytes consumed; the rest
/// (an unfinished line or event) must be given again, followed by what arrives next.
pub fn parse(
    buf: &[u8],
    after_cr: &mut bool,
    data: &mut Vec<u8>,
    mut f: impl FnMut(Event<'_>),
) -> usize {
    let mut pos = 0;
    if !buf.is_empty() {
        if *after_cr && buf[0] == b'\n' {
            pos = 1;
        }
        *after_cr = false;
    }
    let mut consumed = pos;
    // The event being assembled since `consumed`.
    data.clear();
    let mut has_data = false;
    let mut kind = Kind::Message;
    let mut id: Option<&[u8]> = None;
    let mut in_event = false;
    while pos < buf.len() {
        let Some(i) = buf[pos..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .map(|i| pos + i)
        else {
            break; // an unfinished line
        };
        let line = &buf[pos..i];
        pos = if buf[i] == b'\r' && buf.get(i + 1) == Some(&b'\n') {
            i + 2
        } else {
            i + 1
        };
        if line.is_empty() {
            if has_data {
                f(Event {
                    kind,
                    id,
                    data: &data[..],
                });
            }
            data.clear();
            has_data = false;
            kind = Kind::Message;
            id = None;
            in_event = false;
            consumed = pos;
            continue;
        }
        if line[0] == b':' {
            // A comment.
            if !in_event {
                consumed = pos;
            }
            continue;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                if has_data {
                    data.push(b'\n');
                }
                data.extend_from_slice(value);
                has_data = true;
                in_event = true;
            }
            b"event" => {
                kind = match value {
                    b"" | b"message" => Kind::Message,
                    b"gap" => Kind::Gap,
                    _ => Kind::Other,
                };
                in_event = true;
            }
            b"id" => {
                if !value.contains(&0) {
                    id = Some(value);
                }
                in_event = true;
            }
            _ => {
                // `retry` and unknown fields: ignored.
                if !in_event {
                    consumed = pos;
                }
            }
        }
    }
    // A CR as the last consumed byte may be the first half of a CRLF split across reads.
    if consumed > 0 && consumed == buf.len() && buf[consumed - 1] == b'\r' {
        *after_cr = true;
    }
    consumed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (kind, id, data) of an event.
    type Owned = (Kind, Option<Vec<u8>>, Vec<u8>);

    /// (kind, id, data) of every event, parsing `chunks` as successive reads (each read appended
    /// to what the previous calls left unconsumed).
    fn events(chunks: &[&[u8]]) -> (Vec<Owned>, usize) {
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut after_cr = false;
        let mut scratch = Vec::new();
        for c in chunks {
            pending.extend_from_slice(c);
            let used = parse(&pending, &mut after_cr, &mut scratch, |e| {
                out.push((e.kind, e.id.map(<[u8]>::to_vec), e.data.to_vec()))
            });
            pending.drain(..used);
        }
        (out, pending.len())
    }

    fn msg(id: &str, data: &str) -> Owned {
        (Kind::Message, Some(id.into()), data.into())
    }

    const STREAM: &[u8] = b"retry: 2000\n\n\
        event: gap\ndata: {\"missed\":3}\n\n\
        id: 17\ndata: 1 2 ....\n\n\
        : hb\n\n\
        id: 18\r\ndata: first line\r\ndata: second line\r\n\r\n\
        id: 19\rdata:no space\rdata:  two spaces\r\r\
        :comment only\n\
        data\n\n\
        id: 20\ndata: x\nretry: 5\n: mid-event comment\nunknown: y\n\n\
        event: other\ndata: z\n\n\
        id: 21\ndata: last\n\n";

    fn expected() -> Vec<Owned> {
        vec![
            (Kind::Gap, None, b"{\"missed\":3}".to_vec()),
            msg("17", "1 2 ...."),
            msg("18", "first line\nsecond line"),
            msg("19", "no space\n two spaces"),
            (Kind::Message, None, b"".to_vec()),
            msg("20", "x"),
            (Kind::Other, None, b"z".to_vec()),
            msg("21", "last"),
        ]
    }

    #[test]
    fn whole_stream() {
        let (ev, left) = events(&[STREAM]);
        assert_eq!(ev, expected());
        assert_eq!(left, 0);
    }

    #[test]
    fn split_at_every_byte_position() {
        for cut in 0..=STREAM.len() {
            let (ev, left) = events(&[&STREAM[..cut], &STREAM[cut..]]);
            assert_eq!(ev, expected(), "split at {cut}");
            assert_eq!(left, 0, "split at {cut}");
        }
    }

    #[test]
    fn split_at_every_pair_of_positions() {
        for a in 0..=STREAM.len() {
            for b in a..=STREAM.len() {
                let (ev, _) = events(&[&STREAM[..a], &STREAM[a..b], &STREAM[b..]]);
                assert_eq!(ev, expected(), "split at {a}, {b}");
            }
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let chunks: Vec<&[u8]> = STREAM.chunks(1).collect();
        let (ev, left) = events(&chunks);
        assert_eq!(ev, expected());
        assert_eq!(left, 0);
    }

    #[test]
    fn crlf_split_between_reads_is_one_line_break() {
        // "data: a\r" | "\n\r\n": the LF completes the CRLF, the next CRLF is the blank line.
        let (ev, _) = events(&[b"data: a\r", b"\n\r\n"]);
        assert_eq!(ev, vec![(Kind::Message, None, b"a".to_vec())]);
        // The blank line's CR at the end of a read dispatches at once; its LF is skipped.
        let (ev, left) = events(&[b"data: a\r\n\r", b"\ndata: b\r\n\r\n"]);
        assert_eq!(
            ev,
            vec![
                (Kind::Message, None, b"a".to_vec()),
                (Kind::Message, None, b"b".to_vec())
            ]
        );
        assert_eq!(left, 0);
        // CR CR is two line breaks (a blank line), not a CRLF.
        let (ev, _) = events(&[b"data: a\r", b"\r"]);
        assert_eq!(ev, vec![(Kind::Message, None, b"a".to_vec())]);
    }

    #[test]
    fn leftovers() {
        // An unfinished event stays unconsumed; comments and retry lines outside events do not.
        let mut after_cr = false;
        let mut s = Vec::new();
        let n = parse(
            b"retry: 1\n: hb\nid: 4\ndata: x\n",
            &mut after_cr,
            &mut s,
            |_| panic!("no event yet"),
        );
        assert_eq!(n, b"retry: 1\n: hb\n".len());
        let n = parse(b": hb\n\n: hb\n", &mut after_cr, &mut s, |_| {
            panic!("no event")
        });
        assert_eq!(n, 11);
        let n = parse(b"data: unfinished", &mut after_cr, &mut s, |_| panic!());
        assert_eq!(n, 0);
        assert!(!after_cr);
    }
}
