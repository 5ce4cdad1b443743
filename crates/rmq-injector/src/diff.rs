//! RFC 6902 JSON Patch between two JSON documents: what the webhook returns to the API
//! server, computed from the pod before and after injection.
//!
//! Objects are compared key by key. Arrays keep their common head and tail and patch only
//! the middle, so prepending the sidecar is one `add` at index 0 and an extra env entry is
//! one `add` at the end, and a pod another webhook changed between our two invocations is
//! patched where we changed it, not replaced wholesale.

use serde_json::{json, Value};

/// The operations that turn `before` into `after`, in application order.
pub fn json_patch(before: &Value, after: &Value) -> Vec<Value> {
    let mut ops = Vec::new();
    walk(&mut String::new(), before, after, &mut ops);
    ops
}

/// One reference token of a JSON Pointer (`~` and `/` escaped).
pub fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn walk(path: &mut String, a: &Value, b: &Value, ops: &mut Vec<Value>) {
    if a == b {
        return;
    }
    match (a, b) {
        (Value::Object(ma), Value::Object(mb)) => {
            for key in ma.keys().filter(|k| !mb.contains_key(*k)) {
                ops.push(json!({"op": "remove", "path": format!("{path}/{}", escape_token(key))}));
            }
            for (key, vb) in mb {
                let child = format!("{path}/{}", escape_token(key));
                match ma.get(key) {
                    None => ops.push(json!({"op": "add", "path": child, "value": vb})),
                    Some(va) => {
                        let mut child = child;
                        walk(&mut child, va, vb, ops);
                    }
                }
            }
        }
        (Value::Array(xa), Value::Array(xb)) => {
            let head = xa.iter().zip(xb).take_while(|(x, y)| x == y).count();
            let max_tail = xa.len().min(xb.len()) - head;
            let tail = xa
                .iter()
                .rev()
                .zip(xb.iter().rev())
                .take(max_tail)
                .take_while(|(x, y)| x == y)
                .count();
            let mid_a = &xa[head..xa.len() - tail];
            let mid_b = &xb[head..xb.len() - tail];
            let paired = mid_a.len().min(mid_b.len());
            for i in 0..paired {
                let mut child = format!("{path}/{}", head + i);
                walk(&mut child, &mid_a[i], &mid_b[i], ops);
            }
            // Removing at the same index shifts the next extra element into it.
            for _ in paired..mid_a.len() {
                ops.push(json!({"op": "remove", "path": format!("{path}/{}", head + paired)}));
            }
            for (i, item) in mid_b.iter().enumerate().skip(paired) {
                ops.push(
                    json!({"op": "add", "path": format!("{path}/{}", head + i), "value": item}),
                );
            }
        }
        _ => ops.push(json!({"op": "replace", "path": path.clone(), "value": b})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small RFC 6902 applier for add/remove/replace, enough to check round trips here
    /// (the webhook's patches are also applied by Python's `jsonpatch` in tests/deploy).
    fn apply(doc: &Value, ops: &[Value]) -> Value {
        let mut doc = doc.clone();
        for op in ops {
            let path = op["path"].as_str().unwrap();
            let tokens: Vec<String> = path
                .split('/')
                .skip(1)
                .map(|t| t.replace("~1", "/").replace("~0", "~"))
                .collect();
            let (last, parents) = tokens.split_last().unwrap();
            let mut at = &mut doc;
            for t in parents {
                at = match at {
                    Value::Object(m) => m.get_mut(t).unwrap(),
                    Value::Array(v) => &mut v[t.parse::<usize>().unwrap()],
                    _ => panic!("bad path {path}"),
                };
            }
            match (op["op"].as_str().unwrap(), at) {
                ("add" | "replace", Value::Object(m)) => {
                    m.insert(last.clone(), op["value"].clone());
                }
                ("remove", Value::Object(m)) => {
                    m.remove(last).unwrap();
                }
                ("add", Value::Array(v)) => v.insert(last.parse().unwrap(), op["value"].clone()),
                ("replace", Value::Array(v)) => {
                    v[last.parse::<usize>().unwrap()] = op["value"].clone()
                }
                ("remove", Value::Array(v)) => {
                    v.remove(last.parse().unwrap());
                }
                (o, _) => panic!("unexpected {o} at {path}"),
            }
        }
        doc
    }

    #[test]
    fn round_trips_and_stays_minimal() {
        let cases = [
            (json!({"a": [1, 2]}), json!({"a": [0, 1, 2]}), 1),
            (json!({"a": [1, 2]}), json!({"a": [1, 2, 3]}), 1),
            (json!({"a": [1, 2, 3]}), json!({"a": [1, 3]}), 1),
            (json!({"a": [1, 2, 3]}), json!({"a": [9, 8, 7, 6]}), 4),
            (
                json!({"a": {"b/c": 1, "d~": 2}}),
                json!({"a": {"b/c": 2, "e": 3}}),
                3,
            ),
            (
                json!({"a": [{"n": 1}, {"n": 2}]}),
                json!({"a": [{"n": 1, "m": 0}, {"n": 2}]}),
                1,
            ),
            (json!({"a": 1}), json!({"a": "x"}), 1),
            (json!({"a": [1, 1]}), json!({"a": [1, 1, 1]}), 1),
        ];
        for (before, after, n) in cases {
            let ops = json_patch(&before, &after);
            assert_eq!(apply(&before, &ops), after, "{before} -> {after}: {ops:?}");
            assert_eq!(ops.len(), n, "{before} -> {after}: {ops:?}");
        }
    }

    #[test]
    fn paths_are_escaped() {
        let ops = json_patch(&json!({}), &json!({"rocketmq-sidecar/route": "new"}));
        assert_eq!(ops[0]["path"], "/rocketmq-sidecar~1route");
    }
}
