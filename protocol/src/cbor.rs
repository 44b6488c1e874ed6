//! What the strict CBOR decoders (the wire, `messages::decode`; directory entries,
//! `directory::check`) say when bytes are not what they should be: the error's kind and
//! position, never the payload bytes it might quote.

/// The error's kind without any payload bytes it might quote.
pub(crate) fn short_error<E: std::fmt::Debug>(e: &ciborium::de::Error<E>) -> String {
    match e {
        ciborium::de::Error::Io(_) => "truncated".into(),
        ciborium::de::Error::Syntax(at) => format!("syntax error at byte {at}"),
        ciborium::de::Error::Semantic(at, msg) => {
            let msg: String = msg.chars().take(80).collect();
            match at {
                Some(at) => format!("{msg} at byte {at}"),
                None => msg,
            }
        }
        ciborium::de::Error::RecursionLimitExceeded => "nested too deeply".into(),
    }
}
