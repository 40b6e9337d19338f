//! The OpenAPI 3 document (`crates/api/openapi.json`, checked in and served at
//! `/openapi.json`) and the checks that keep it and the code in step: the document's
//! paths and methods are exactly [`crate::routes::ROUTES`], its error codes exactly
//! [`crate::ApiError`]'s, and [`check_response`] validates a live answer against it (used
//! by the tests that call every documented path).

use serde_json::Value;

/// The document, as served.
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// The parsed document.
pub fn document() -> Value {
    serde_json::from_str(DOCUMENT).unwrap_or(Value::Null)
}

/// Every (METHOD, path) the document describes.
pub fn documented_routes(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            if let Some(ops) = item.as_object() {
                for method in ops.keys() {
                    out.push((method.to_uppercase(), path.clone()));
                }
            }
        }
    }
    out.sort();
    out
}

/// Checks that `status` (and `body`, if JSON is documented for it) is a documented answer
/// of `method path`. `path` is the template, e.g. `/v1/vms/{name}`.
pub fn check_response(
    doc: &Value,
    method: &str,
    path: &str,
    status: u16,
    body: &[u8],
) -> Result<(), String> {
    let op = &doc["paths"][path][method.to_lowercase()];
    if op.is_null() {
        return Err(format!("{method} {path} is not documented"));
    }
    let resp = &op["responses"][status.to_string()];
    if resp.is_null() {
        return Err(format!(
            "{method} {path} answered {status}, which is not documented"
        ));
    }
    let Some(schema) = resp["content"]["application/json"].get("schema") else {
        return Ok(());
    };
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| format!("{method} {path} {status}: body is not JSON: {e}"))?;
    check_value(doc, schema, &value, "body").map_err(|e| format!("{method} {path} {status}: {e}"))
}

/// Validates `value` against the subset of JSON Schema the document uses: `$ref`, `type`,
/// `required`, `properties`, `additionalProperties`, `items`, `enum`, `oneOf`, `allOf`, and
/// OpenAPI 3.0's `nullable` (keywords outside the subset, such as `minimum`, are not checked).
pub fn check_value(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if value.is_null() && schema["nullable"] == Value::Bool(true) {
        return Ok(());
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            check_value(doc, s, value, at)?;
        }
    }
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return check_value(doc, &doc["components"]["schemas"][name], value, at);
    }
    if let Some(alts) = schema["oneOf"].as_array() {
        let ok = alts
            .iter()
            .filter(|s| check_value(doc, s, value, at).is_ok())
            .count();
        return if ok == 1 {
            Ok(())
        } else {
            Err(format!("{at}: matches {ok} of the oneOf alternatives"))
        };
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    let type_ok = match schema["type"].as_str() {
        None => true,
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some(_) => false,
    };
    if !type_ok {
        return Err(format!("{at}: {value} is not of type {}", schema["type"]));
    }
    if let Some(obj) = value.as_object() {
        for req in schema["required"].as_array().into_iter().flatten() {
            let key = req.as_str().unwrap_or_default();
            if !obj.contains_key(key) {
                return Err(format!("{at}: required property {key:?} is missing"));
            }
        }
        let props = schema["properties"].as_object();
        for (k, v) in obj {
            let here = format!("{at}.{k}");
            match (
                props.and_then(|p| p.get(k)),
                &schema["additionalProperties"],
            ) {
                (Some(s), _) => check_value(doc, s, v, &here)?,
                (None, Value::Bool(false)) => {
                    return Err(format!("{here}: property not in the schema"))
                }
                (None, s) if s.is_object() => check_value(doc, s, v, &here)?,
                (None, _) => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            check_value(doc, items, v, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::ROUTES;

    #[test]
    fn the_document_and_the_router_list_the_same_routes() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.0.3");
        let mut code: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        code.sort();
        assert_eq!(documented_routes(&doc), code);
    }

    #[test]
    fn the_document_lists_exactly_the_error_codes_of_the_code() {
        use crate::ApiError;
        let all = [
            ApiError::MalformedJson(String::new()),
            ApiError::InvalidRequest(String::new()),
            ApiError::InvalidConfig(String::new()),
            ApiError::BodyTooLarge(0),
            ApiError::NotFound(String::new()),
            ApiError::NoRoute(String::new()),
            ApiError::MethodNotAllowed,
            ApiError::Exists(String::new()),
            ApiError::WrongState(String::new()),
            ApiError::ConsoleBusy(String::new()),
            ApiError::UpgradeRequired,
            ApiError::StartFailed {
                name: String::new(),
                message: String::new(),
            },
            ApiError::VmmUnavailable {
                name: String::new(),
                message: String::new(),
            },
            ApiError::Internal(String::new()),
        ];
        let mut ours: Vec<&str> = all.iter().map(|e| e.code()).collect();
        ours.sort();
        let doc = document();
        let mut documented: Vec<&str> = doc["components"]["schemas"]["Error"]["properties"]["code"]
            ["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        documented.sort();
        assert_eq!(ours, documented);
        // Every documented status of an error response is the status of some error.
        for e in &all {
            assert!(e.status().as_u16() >= 400, "{e:?}");
        }
    }

    #[test]
    fn the_validator_rejects_what_the_schema_forbids() {
        let doc = document();
        let info = serde_json::json!({"$ref": "#/components/schemas/VmInfo"});
        let good = serde_json::json!({"name": "a", "state": "running", "vcpus": 1,
            "memory_bytes": 1, "config": {"name": "a", "kernel": "/k", "memory": 4096}});
        check_value(&doc, &info, &good, "b").unwrap();
        let mut bad = good.clone();
        bad["state"] = "dancing".into();
        assert!(check_value(&doc, &info, &bad, "b").is_err());
        let mut bad = good.clone();
        bad["config"]["colour"] = 1.into();
        assert!(check_value(&doc, &info, &bad, "b").is_err());
        let mut bad = good.clone();
        bad.as_object_mut().unwrap().remove("vcpus");
        assert!(check_value(&doc, &info, &bad, "b").is_err());

        // Devices: `nullable` admits null, `allOf` still checks a present value.
        let mut dev = good;
        dev["config"]["vsock"] = Value::Null;
        dev["config"]["disks"] = serde_json::json!([{"path": "/d", "serial": null}]);
        check_value(&doc, &info, &dev, "b").unwrap();
        let mut bad = dev.clone();
        bad["config"]["vsock"] = serde_json::json!({"cid": 3});
        assert!(check_value(&doc, &info, &bad, "b").is_err());
        let mut bad = dev.clone();
        bad["config"]["disks"] = serde_json::json!([{"readonly": true}]);
        assert!(check_value(&doc, &info, &bad, "b").is_err());
        let mut bad = dev;
        bad["config"]["cpus"] = Value::Null;
        assert!(check_value(&doc, &info, &bad, "b").is_err());
    }

    #[test]
    fn a_spec_with_every_device_serializes_to_what_the_document_describes() {
        let doc = document();
        let schema = serde_json::json!({"$ref": "#/components/schemas/VmSpec"});
        let spec: crate::model::VmSpec = serde_json::from_value(serde_json::json!({
            "name": "a", "kernel": "/k", "disks": [{"path": "/d"}, {"path": "/e", "serial": "s",
            "format": "qcow2", "readonly": true}], "nets": [{"tap": "t0"},
            {"tap": "t1", "mac": [82, 84, 0, 1, 2, 3]}], "vsock": {"cid": 3, "socket": "/v"},
            "rng": true, "balloon": {"deflate_on_oom": true, "free_page_reporting": true},
            "balloon_target": "32M"}))
        .unwrap();
        let value = serde_json::to_value(&spec).unwrap();
        check_value(&doc, &schema, &value, "spec").unwrap();
        let bare: crate::model::VmSpec =
            serde_json::from_value(serde_json::json!({"name": "a", "kernel": "/k"})).unwrap();
        check_value(&doc, &schema, &serde_json::to_value(&bare).unwrap(), "spec").unwrap();
    }
}
