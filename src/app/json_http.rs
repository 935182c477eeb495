//! JSON over HTTP for the page's login and the server API: answers with a JSON object, and
//! request bodies parsed strictly (a JSON object, declared as such, with only the fields
//! the route knows, each of its type).

use serde_json::{json, Map, Value};

use crate::proto::handshake::Request;
use crate::server::HttpResponse;

/// An answer with a JSON body, never cached.
pub fn json_response(status: u16, body: &Value) -> HttpResponse {
    HttpResponse {
        status,
        content_type: "application/json",
        headers: "Cache-Control: no-store\r\n".into(),
        body: body.to_string().into_bytes(),
    }
}

/// An error answer: `{"error": message}`.
pub fn json_error(status: u16, message: &str) -> HttpResponse {
    json_response(status, &json!({ "error": message }))
}

/// The body as a JSON object with no fields but `fields`; the answer that refuses it
/// otherwise: 415 when it is not declared `application/json` (which also keeps plain HTML
/// forms of other sites out: they cannot send that type), 400 when it is not an object or
/// has another field.
pub fn json_object(
    request: &Request,
    body: &[u8],
    fields: &[&str],
) -> Result<Map<String, Value>, HttpResponse> {
    let declared = request.header("Content-Type").is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
    });
    if !declared {
        return Err(json_error(415, "send Content-Type: application/json"));
    }
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) else {
        return Err(json_error(400, "the body must be a JSON object"));
    };
    if let Some(unknown) = object.keys().find(|k| !fields.contains(&k.as_str())) {
        let shown: String = unknown.chars().take(32).collect();
        return Err(json_error(400, &format!("unknown field {shown:?}")));
    }
    Ok(object)
}

/// A string field of a checked body: `Ok(None)` when absent, 400 when not a string.
pub fn string_field<'a>(
    object: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<&'a str>, HttpResponse> {
    match object.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(json_error(
            400,
            &format!("field {field:?} must be a string"),
        )),
    }
}

/// A string field that must be there.
pub fn required_string<'a>(
    object: &'a Map<String, Value>,
    field: &str,
) -> Result<&'a str, HttpResponse> {
    string_field(object, field)?
        .ok_or_else(|| json_error(400, &format!("field {field:?} is required")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(content_type: &str) -> Request {
        Request::new("POST", "/x", &[("Content-Type", content_type)])
    }

    #[test]
    fn bodies_are_checked_strictly() {
        let json = post("application/json; charset=utf-8");
        let object = json_object(&json, br#"{"name":"ann"}"#, &["name", "password"]).unwrap();
        assert_eq!(required_string(&object, "name").unwrap(), "ann");
        assert_eq!(string_field(&object, "password").unwrap(), None);
        for (request, body, status) in [
            (post("text/plain"), &br#"{"name":"ann"}"#[..], 415),
            (Request::new("POST", "/x", &[]), br#"{"name":"ann"}"#, 415),
            (post("application/json"), br#"["ann"]"#, 400),
            (post("application/json"), b"{", 400),
            (
                post("application/json"),
                br#"{"name":"ann","admin":true}"#,
                400,
            ),
        ] {
            let got = json_object(&request, body, &["name", "password"]).map(|_| ());
            assert_eq!(got.map_err(|r| r.status), Err(status), "{body:?}");
        }
        let object = json_object(&json, br#"{"name":7}"#, &["name"]).unwrap();
        assert_eq!(
            required_string(&object, "name").map_err(|r| r.status),
            Err(400)
        );
    }
}
