//! Query strings and pages, the same on every list route: a strict query
//! (each key known and given once), `limit=` within its bounds, a cursor as
//! this API issued it or `400 invalid_cursor`, and a page body that stops
//! early (with its `next_cursor`) rather than grow past a byte budget.

use crate::auth::check_id;
use crate::error::ApiError;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

/// A value as echoed in an error: at most 64 characters.
pub(crate) fn shown(v: &str) -> String {
    v.chars().take(64).collect()
}

/// One query string, strictly: each key one of `accepted`, each given once.
pub(crate) fn query_pairs(query: Option<&str>, accepted: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if !accepted.contains(&k.as_ref()) {
            let accepted = if accepted.is_empty() {
                "none accepted".to_owned()
            } else {
                accepted.join(", ")
            };
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("unknown query parameter `{}` ({accepted})", shown(&k)),
            ));
        }
        if pairs.iter().any(|(seen, _)| *seen == k) {
            return Err(ApiError::bad_request(
                "duplicate_query_param",
                format!("query parameter `{}` is given more than once", shown(&k)),
            ));
        }
        pairs.push((k.into_owned(), v.into_owned()));
    }
    Ok(pairs)
}

/// `400 invalid_cursor` for a cursor this API did not issue.
pub(crate) fn invalid_cursor(v: &str) -> ApiError {
    ApiError::bad_request(
        "invalid_cursor",
        format!(
            "cursor {:?} is not one this API issued: pass `next_cursor` of the previous page as it is",
            shown(v)
        ),
    )
}

/// A cursor that is an id (the last one of the previous page).
pub(crate) fn id_cursor(v: &str) -> Result<String, ApiError> {
    check_id("cursor", v).map_err(|_| invalid_cursor(v))?;
    Ok(v.to_owned())
}

/// A cursor that is a position (the last one of the previous page).
pub(crate) fn position_cursor(v: &str) -> Result<i64, ApiError> {
    if v.is_empty() || v.len() > 18 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid_cursor(v));
    }
    v.parse().map_err(|_| invalid_cursor(v))
}

/// `limit=` as `1..=max`, else `400 invalid_query`.
pub(crate) fn limit_param(v: &str, max: u32) -> Result<u32, ApiError> {
    v.parse::<u32>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!("`limit={}`: must be 1 to {max}", shown(v)),
            )
        })
}

/// The items of a page, serialized, up to `budget` bytes in all (always the
/// first, whatever its size): the client continues after the last one kept.
pub(crate) fn within_budget<T>(items: &[T], render: impl Fn(&T) -> Value, budget: usize) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut size = 0;
    for item in items {
        let bytes = serde_json::to_vec(&render(item)).expect("json");
        if !out.is_empty() && size + bytes.len() > budget {
            break;
        }
        size += bytes.len() + 1;
        out.push(bytes);
    }
    out
}

/// The serialized size of `head`, to take from a page's byte budget.
pub(crate) fn head_bytes(head: &Map<String, Value>) -> usize {
    serde_json::to_vec(head).expect("json").len()
}

/// `head` with `list: [items…]` and `next_cursor` after its own members.
pub(crate) fn paged_body(
    head: Map<String, Value>,
    list: &str,
    items: &[Vec<u8>],
    next: Option<String>,
) -> Response {
    let mut body = serde_json::to_vec(&Value::Object(head)).expect("json");
    let close = body.pop();
    debug_assert_eq!(close, Some(b'}'));
    if body.len() > 1 {
        body.push(b',');
    }
    body.extend_from_slice(&serde_json::to_vec(list).expect("json"));
    body.extend_from_slice(b":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"],\"next_cursor\":");
    body.extend_from_slice(&serde_json::to_vec(&next).expect("json"));
    body.push(b'}');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_page_keeps_its_first_item_and_stops_at_the_budget() {
        let items = vec![json!("a".repeat(50)), json!("b".repeat(50)), json!("c")];
        assert_eq!(within_budget(&items, Clone::clone, 0).len(), 1);
        assert_eq!(within_budget(&items, Clone::clone, 105).len(), 2);
        assert_eq!(within_budget(&items, Clone::clone, 1_000).len(), 3);
    }

    #[test]
    fn cursors_are_only_what_was_issued() {
        assert_eq!(position_cursor("0").unwrap(), 0);
        assert_eq!(position_cursor("199").unwrap(), 199);
        for bad in ["", "-1", "+1", "1e3", "x", " 1", "1234567890123456789"] {
            assert_eq!(
                position_cursor(bad).unwrap_err().code,
                "invalid_cursor",
                "{bad:?}"
            );
        }
        assert_eq!(id_cursor("nope").unwrap_err().code, "invalid_cursor");
        assert_eq!(limit_param("0", 10).unwrap_err().code, "invalid_query");
        assert_eq!(limit_param("10", 10).unwrap(), 10);
    }

    #[tokio::test]
    async fn a_paged_body_is_the_head_then_the_list_then_the_cursor() {
        let mut head = Map::new();
        head.insert("id".into(), json!("x"));
        let items = within_budget(&[json!({"n": 1}), json!({"n": 2})], Clone::clone, 100);
        let response = paged_body(head, "items", &items, Some("2".into()));
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            json!({"id": "x", "items": [{"n": 1}, {"n": 2}], "next_cursor": "2"})
        );
        let empty = paged_body(Map::new(), "items", &[], None);
        let bytes = axum::body::to_bytes(empty.into_body(), usize::MAX).await.unwrap();
        assert_eq!(&bytes[..], br#"{"items":[],"next_cursor":null}"#);
    }
}
