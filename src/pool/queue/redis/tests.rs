//! Tests of `redis`.

use super::events::stream_entries;
use super::*;

#[test]
fn urls_lose_their_credentials() {
    assert_eq!(redact("redis://:secret@10.0.0.1:6379/0"), "redis://***@10.0.0.1:6379/0");
    assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
}

#[test]
fn integers_in_either_notation() {
    assert_eq!(parse_int("35184372088833"), Some(35_184_372_088_833));
    assert_eq!(parse_int("1.8e+12"), Some(1_800_000_000_000));
    assert_eq!(parse_int("1.5"), None);
    assert_eq!(parse_int("-1"), None);
    assert_eq!(parse_int("x"), None);
}

#[test]
fn malformed_events_are_errors() {
    assert_eq!(
        decode_event(r#"{"event":"allocated","id":"a","host":"h","attempt":2}"#),
        Ok(QueueEvent::Allocated { id: "a".into(), host: "h".into(), attempt: 2 })
    );
    assert_eq!(
        decode_event(r#"{"event":"failed","id":"a","detail":"gave up"}"#),
        Ok(QueueEvent::Failed { id: "a".into(), host: None, detail: "gave up".into() })
    );
    assert_eq!(
        decode_event(r#"{"event":"started","id":"a","host":"h","attempt":3,"detail":"{\"conversation\":\"c1\"}"}"#),
        Ok(QueueEvent::Started { id: "a".into(), host: "h".into(), attempt: 3, detail: r#"{"conversation":"c1"}"#.into() })
    );
    // The scripts name priorities as Priority::as_str does.
    for p in Priority::ALL {
        let text = format!(r#"{{"event":"queued","id":"a","priority":"{p}"}}"#);
        assert_eq!(decode_event(&text), Ok(QueueEvent::Queued { id: "a".into(), priority: p }));
    }
    assert!(include_str!("../scripts/common.lua").contains("{'critical', 'high', 'medium', 'low'}"));
    assert!(decode_event(r#"{"event":"queued","id":"a","priority":"urgent"}"#).is_err());
    assert!(decode_event(r#"{"event":"started","id":"a","host":"h","attempt":1}"#).is_err());
    assert!(decode_event("not json").is_err());
    assert!(decode_event(r#"{"event":"allocated","id":"a"}"#).is_err());
    assert!(decode_event(r#"{"event":"exploded","id":"a"}"#).is_err());
}

#[test]
fn stream_replies_are_read_defensively() {
    let bulk = |t: &str| Value::BulkString(t.as_bytes().to_vec());
    let entry = |id: &str, fields: Vec<Value>| Value::Array(vec![bulk(id), Value::Array(fields)]);
    let reply = Value::Array(vec![Value::Array(vec![
        bulk("css:{q}:events"),
        Value::Array(vec![
            entry("1-0", vec![bulk("e"), bulk("{}")]),
            // Someone else's entry without our field: its id still moves us on.
            entry("2-0", vec![bulk("other"), bulk("x")]),
            Value::Int(3),
        ]),
    ])]);
    assert_eq!(
        stream_entries(&reply),
        vec![("1-0".to_owned(), Some("{}".to_owned())), ("2-0".to_owned(), None)]
    );
    // A read that timed out.
    assert!(stream_entries(&Value::Nil).is_empty());
    assert_eq!(newest_entry_id(&Value::Array(vec![entry("7-1", vec![])])), Some("7-1".to_owned()));
    assert_eq!(newest_entry_id(&Value::Array(vec![])), None);
}
