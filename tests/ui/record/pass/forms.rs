use rill::prelude::*;

#[record]
pub struct PageView {
    #[record(key)]
    pub user_id: String,
    pub url: String,
    #[record(timestamp)]
    pub view_time: f64,
}

#[record(codec = "postcard")]
struct Compact {
    #[record(key)]
    id: u64,
    #[record(timestamp)]
    at_ms: i64,
    r#type: String,
}

#[record]
struct Plain {
    at: std::time::SystemTime,
}

#[derive(Debug)]
#[record]
struct WithOtherAttrs {
    #[serde(rename = "u")]
    #[record(timestamp)]
    when: u64,
}

fn main() {
    let v = PageView { user_id: "u1".into(), url: "/a".into(), view_time: 1.5 };
    assert_eq!(v.key(), Some(b"u1".to_vec()));
    // A string key is sent from the record itself, without a copy of its own.
    assert!(matches!(v.key_ref(), Some(std::borrow::Cow::Borrowed(b"u1"))));
    assert_eq!(v.event_time(), Some(1500));
    assert_eq!(PageView::url.name(), "url");
    assert_eq!(PageView::url.get(&v), "/a");
    assert_eq!(<Compact as Record>::CODEC, Codec::Postcard);
    assert_eq!(Compact::r#type.name(), "type");
    let c = Compact { id: 7, at_ms: 9, r#type: "t".into() };
    assert_eq!(c.key(), Some(7u64.to_be_bytes().to_vec()));
    assert_eq!(c.key_ref().as_deref(), Some(&7u64.to_be_bytes()[..]));
    assert_eq!(Plain { at: std::time::UNIX_EPOCH }.event_time(), None);
    assert_eq!(Plain { at: std::time::UNIX_EPOCH }.key_ref(), None);
    let w = WithOtherAttrs { when: 5 };
    assert_eq!(w.event_time(), Some(5));
    assert_eq!(rill::Codec::Json.encode(&w).unwrap(), br#"{"u":5}"#.to_vec());
}
