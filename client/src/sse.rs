//! The streamed answer: server-sent events, each `data: {chunk}\n\n`, then
//! `event: receipt\ndata: {base64}\n\n`, then `data: [DONE]\n\n`. The receipt's response hash
//! covers every byte before the receipt event.

use data_encoding::BASE64;
use serde_json::Value;

use protocol::channel::RECEIPT_EVENT;

use crate::ClientError;

/// What a finished stream held.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) text: String,
    pub(crate) finish_reason: String,
    pub(crate) usage: Option<Value>,
    /// The bytes the receipt covers.
    pub(crate) hashed: Vec<u8>,
    pub(crate) receipt: Vec<u8>,
}

#[derive(Debug)]
pub(crate) struct EventStream {
    buffer: Vec<u8>,
    /// Where the next unparsed event starts.
    next: usize,
    limit: usize,
    text: String,
    finish_reason: Option<String>,
    usage: Option<Value>,
    /// Where the receipt event starts, and the receipt.
    receipt: Option<(usize, Vec<u8>)>,
    done: bool,
}

fn protocol(what: impl Into<String>) -> ClientError {
    ClientError::Protocol(what.into())
}

impl EventStream {
    pub(crate) fn new(limit: usize) -> Self {
        EventStream {
            buffer: Vec::new(),
            next: 0,
            limit,
            text: String::new(),
            finish_reason: None,
            usage: None,
            receipt: None,
            done: false,
        }
    }

    /// Take more bytes and handle every event they complete.
    pub(crate) fn push(
        &mut self,
        bytes: &[u8],
        on_text: &mut impl FnMut(&str),
    ) -> Result<(), ClientError> {
        if self.buffer.len().saturating_add(bytes.len()) > self.limit {
            return Err(protocol(format!(
                "the stream is longer than {} bytes",
                self.limit
            )));
        }
        self.buffer.extend_from_slice(bytes);
        while let Some(length) = self
            .buffer
            .get(self.next..)
            .and_then(|rest| rest.windows(2).position(|w| w == b"\n\n"))
        {
            let start = self.next;
            let end = start + length;
            self.next = end + 2;
            let event = self
                .buffer
                .get(start..end)
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
            self.event(start, &event, on_text)?;
        }
        Ok(())
    }

    fn event(
        &mut self,
        start: usize,
        event: &[u8],
        on_text: &mut impl FnMut(&str),
    ) -> Result<(), ClientError> {
        let event = std::str::from_utf8(event).map_err(|_| protocol("an event is not UTF-8"))?;
        if self.done {
            return Err(protocol("an event follows [DONE]"));
        }
        if event == "data: [DONE]" {
            if self.receipt.is_none() {
                return Err(protocol("the stream ended without a receipt"));
            }
            self.done = true;
            return Ok(());
        }
        if self.receipt.is_some() {
            return Err(protocol("an event follows the receipt"));
        }
        if let Some(data) = event
            .strip_prefix("event: ")
            .and_then(|e| e.strip_prefix(RECEIPT_EVENT))
            .and_then(|e| e.strip_prefix("\ndata: "))
        {
            let receipt = BASE64
                .decode(data.as_bytes())
                .map_err(|_| protocol("the receipt event is not base64"))?;
            self.receipt = Some((start, receipt));
            return Ok(());
        }
        let data = event
            .strip_prefix("data: ")
            .ok_or_else(|| protocol("an event is not `data: ` or the receipt"))?;
        let chunk: Value = serde_json::from_str(data)
            .map_err(|e| protocol(format!("a chunk is not JSON: {e}")))?;
        if let Some(error) = chunk.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)");
            return Err(ClientError::Api {
                status: 200,
                code: error.get("code").and_then(Value::as_str).map(str::to_owned),
                message: format!("failed while streaming: {message}"),
            });
        }
        if let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) {
            if let Some(text) = choice
                .get("delta")
                .and_then(|d| d.get("content"))
                .and_then(Value::as_str)
                && !text.is_empty()
            {
                self.text.push_str(text);
                on_text(text);
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish_reason = Some(reason.to_owned());
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(usage.clone());
        }
        Ok(())
    }

    /// The stream ended: it must have ended with the receipt and `[DONE]`, and nothing else.
    pub(crate) fn finish(mut self) -> Result<Finished, ClientError> {
        if !self.done || self.next != self.buffer.len() {
            return Err(protocol(
                "the stream ended before the receipt and [DONE] (cut short?)",
            ));
        }
        let (start, receipt) = self
            .receipt
            .take()
            .ok_or_else(|| protocol("the stream carries no receipt"))?;
        self.buffer.truncate(start);
        Ok(Finished {
            text: self.text,
            finish_reason: self.finish_reason.unwrap_or_default(),
            usage: self.usage,
            hashed: self.buffer,
            receipt,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(text: &str) -> String {
        format!(
            "data: {}\n\n",
            serde_json::json!({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
        )
    }

    fn stream() -> (String, String) {
        let before = format!("{}{}", chunk("Par"), chunk("is."));
        let receipt = BASE64.encode(b"receipt bytes");
        let all = format!("{before}event: receipt\ndata: {receipt}\n\ndata: [DONE]\n\n");
        (before, all)
    }

    #[test]
    fn split_anywhere_the_text_and_the_hashed_prefix_are_the_same() {
        let (before, all) = stream();
        for cut in 0..all.len() {
            let mut events = EventStream::new(1 << 20);
            let mut seen = String::new();
            let mut on_text = |t: &str| seen.push_str(t);
            events.push(&all.as_bytes()[..cut], &mut on_text).unwrap();
            events.push(&all.as_bytes()[cut..], &mut on_text).unwrap();
            let done = events.finish().unwrap();
            assert_eq!(done.text, "Paris.");
            assert_eq!(seen, "Paris.");
            assert_eq!(done.hashed, before.as_bytes());
            assert_eq!(done.receipt, b"receipt bytes");
        }
    }

    #[test]
    fn a_stream_cut_short_or_padded_is_refused() {
        let (before, all) = stream();
        let mut on_text = |_: &str| {};
        // Without [DONE], or without the receipt.
        for partial in [&all[..all.len() - 1], before.as_str()] {
            let mut events = EventStream::new(1 << 20);
            events.push(partial.as_bytes(), &mut on_text).unwrap();
            assert!(matches!(events.finish(), Err(ClientError::Protocol(_))));
        }
        // [DONE] before any receipt.
        let mut events = EventStream::new(1 << 20);
        let early = format!("{before}data: [DONE]\n\n");
        assert!(events.push(early.as_bytes(), &mut on_text).is_err());
        // Text after the receipt: not covered by it, so not accepted.
        let mut events = EventStream::new(1 << 20);
        let (_, tail) = all.split_at(before.len());
        let late = format!("{before}{}{}", &tail[..tail.len() - 14], chunk(" Or not."));
        assert!(events.push(late.as_bytes(), &mut on_text).is_err());
    }

    #[test]
    fn the_length_limit_holds() {
        let (_, all) = stream();
        let mut events = EventStream::new(all.len() - 1);
        assert!(events.push(all.as_bytes(), &mut |_| {}).is_err());
    }

    proptest::proptest! {
        /// Whatever the server sends, cut wherever the network cuts it: an error or a result,
        /// never a panic, and the same outcome however it was cut.
        #[test]
        fn any_bytes_any_cuts_same_outcome(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            cut in 0usize..512,
        ) {
            let cut = cut.min(body.len());
            let outcome = |parts: &[&[u8]]| {
                let mut events = EventStream::new(1 << 20);
                for part in parts {
                    events.push(part, &mut |_| {}).map_err(|e| e.to_string())?;
                }
                events.finish().map(|f| (f.text, f.hashed, f.receipt)).map_err(|e| e.to_string())
            };
            let whole = outcome(&[&body]);
            let split = outcome(&[&body[..cut], &body[cut..]]);
            proptest::prop_assert_eq!(whole.is_ok(), split.is_ok());
            if let (Ok(a), Ok(b)) = (whole, split) {
                proptest::prop_assert_eq!(a, b);
            }
        }
    }
}
