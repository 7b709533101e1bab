//! XML request bodies and answers (PrestaShop's webservice, SOAP-era ERPs), read and written
//! as JSON so that manifests use the same JSON pointers and field maps for either.
//!
//! The convention, both ways:
//! - an element is a key of its parent's object; repeated elements are an array;
//! - an attribute is a key starting with `@` (`@id`), the element's text beside attributes or
//!   children is `#text`;
//! - an element with only text is that text (a string; CDATA is text too), an empty one `""`.
//!
//! `<prestashop><product><id><![CDATA[12]]></id><name><language id="1">Mug</language></name>
//! </product></prestashop>` reads as `{"prestashop": {"product": {"id": "12", "name":
//! {"language": {"@id": "1", "#text": "Mug"}}}}}`, so the id is at `/prestashop/product/id`.
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::reader::Reader;
use serde_json::{Map, Value};

/// Deepest nesting read; deeper documents are refused (a provider does not send them).
const MAX_DEPTH: usize = 64;

/// Read an XML document as JSON: `{"<root>": …}`.
pub fn to_json(xml: &str) -> Result<Value, String> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(false);
    // (element name, its object, its text)
    let mut stack: Vec<(String, Map<String, Value>, String)> = Vec::new();
    let mut root: Option<Value> = None;
    loop {
        let event = reader.read_event().map_err(|e| {
            format!(
                "not well-formed XML at byte {}: {e}",
                reader.error_position()
            )
        })?;
        match event {
            Event::Start(start) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("XML nested deeper than {MAX_DEPTH} elements"));
                }
                let (name, attrs) = open(&start)?;
                stack.push((name, attrs, String::new()));
            }
            Event::Empty(start) => {
                let (name, attrs) = open(&start)?;
                let value = close(attrs, String::new());
                attach(&mut stack, &mut root, name, value)?;
            }
            Event::End(_) => {
                let (name, attrs, text) = stack.pop().ok_or("an end tag without its start")?;
                let value = close(attrs, text);
                attach(&mut stack, &mut root, name, value)?;
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    let raw = t.decode().map_err(|e| e.to_string())?;
                    top.2.push_str(&raw);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.2
                        .push_str(std::str::from_utf8(&t).map_err(|e| e.to_string())?);
                }
            }
            Event::GeneralRef(r) => {
                if let Some(top) = stack.last_mut() {
                    let resolved = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                        Some(c) => c.to_string(),
                        None => {
                            let name = r.decode().map_err(|e| e.to_string())?;
                            quick_xml::escape::resolve_predefined_entity(&name)
                                .ok_or_else(|| format!("unknown XML entity `&{name};`"))?
                                .to_owned()
                        }
                    };
                    top.2.push_str(&resolved);
                }
            }
            Event::Eof => break,
            // Declarations, comments, processing instructions, doctypes carry no data.
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err("the XML document ends inside an element".into());
    }
    root.ok_or_else(|| "the XML document has no element".into())
}

fn open(start: &BytesStart<'_>) -> Result<(String, Map<String, Value>), String> {
    let name = String::from_utf8(start.name().as_ref().to_vec()).map_err(|e| e.to_string())?;
    let mut attrs = Map::new();
    for a in start.attributes() {
        let a = a.map_err(|e| e.to_string())?;
        let key = String::from_utf8(a.key.as_ref().to_vec()).map_err(|e| e.to_string())?;
        // Namespace declarations and XLink hyperlinks (PrestaShop's `xlink:href` on every
        // reference) are links, not data: `<id_product xlink:href="…">21</id_product>` is 21.
        if key == "xmlns" || key.starts_with("xmlns:") || key.starts_with("xlink:") {
            continue;
        }
        let value = a.unescape_value().map_err(|e| e.to_string())?;
        attrs.insert(format!("@{key}"), Value::String(value.into_owned()));
    }
    Ok((name, attrs))
}

fn close(mut obj: Map<String, Value>, text: String) -> Value {
    if obj.is_empty() {
        return Value::String(if text.trim().is_empty() && !text.is_empty() {
            String::new()
        } else {
            text
        });
    }
    if !text.trim().is_empty() {
        obj.insert("#text".into(), Value::String(text));
    }
    Value::Object(obj)
}

fn attach(
    stack: &mut [(String, Map<String, Value>, String)],
    root: &mut Option<Value>,
    name: String,
    value: Value,
) -> Result<(), String> {
    let Some(parent) = stack.last_mut() else {
        if root.is_some() {
            return Err("the XML document has more than one root element".into());
        }
        let mut top = Map::new();
        top.insert(name, value);
        *root = Some(Value::Object(top));
        return Ok(());
    };
    match parent.1.get_mut(&name) {
        None => {
            parent.1.insert(name, value);
        }
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
    }
    Ok(())
}

/// Write `value` as an XML document whose root element is `root`.
pub fn from_json(root: &str, value: &Value) -> Result<String, String> {
    let mut w = Writer::new(Vec::new());
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
        .map_err(|e| e.to_string())?;
    element(&mut w, root, value, 0)?;
    String::from_utf8(w.into_inner()).map_err(|e| e.to_string())
}

fn element(w: &mut Writer<Vec<u8>>, name: &str, value: &Value, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("a body nested deeper than {MAX_DEPTH} levels"));
    }
    if name.is_empty() || name.starts_with('@') || name.starts_with('#') {
        return Err(format!("`{name}` cannot be an XML element name"));
    }
    match value {
        Value::Array(items) => {
            for item in items {
                element(w, name, item, depth + 1)?;
            }
            Ok(())
        }
        Value::Object(obj) => {
            let mut start = BytesStart::new(name);
            for (k, v) in obj {
                if let Some(attr) = k.strip_prefix('@') {
                    start.push_attribute((attr, scalar(v).as_str()));
                }
            }
            w.write_event(Event::Start(start))
                .map_err(|e| e.to_string())?;
            for (k, v) in obj {
                if k == "#text" {
                    w.write_event(Event::Text(BytesText::new(&scalar(v))))
                        .map_err(|e| e.to_string())?;
                } else if !k.starts_with('@') {
                    element(w, k, v, depth + 1)?;
                }
            }
            w.write_event(Event::End(BytesEnd::new(name)))
                .map_err(|e| e.to_string())
        }
        Value::Null => w
            .write_event(Event::Empty(BytesStart::new(name)))
            .map_err(|e| e.to_string()),
        other => {
            w.write_event(Event::Start(BytesStart::new(name)))
                .map_err(|e| e.to_string())?;
            w.write_event(Event::Text(BytesText::new(&scalar(other))))
                .map_err(|e| e.to_string())?;
            w.write_event(Event::End(BytesEnd::new(name)))
                .map_err(|e| e.to_string())
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Whether a body looks like XML (by its content type, or its first character).
pub fn is_xml(content_type: Option<&str>, body: &str) -> bool {
    content_type.is_some_and(|c| c.contains("xml")) || body.trim_start().starts_with('<')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prestashop_answers_read_as_json() {
        // developers.prestashop.com/webservice (8.x), resources/products: a product as the
        // webservice returns it.
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<prestashop xmlns:xlink="http://www.w3.org/1999/xlink">
<product>
  <id><![CDATA[12]]></id>
  <reference><![CDATA[MUG-1]]></reference>
  <name><language id="1" xlink:href="http://shop/api/languages/1"><![CDATA[Mug &amp; cup]]></language></name>
  <associations><categories nodeType="category"><category><id>2</id></category><category><id>3</id></category></categories></associations>
  <empty/>
  <price>9.5 &amp; more &#233;</price>
</product>
</prestashop>"#;
        let v = to_json(xml).unwrap();
        assert_eq!(v.pointer("/prestashop/product/id"), Some(&json!("12")));
        assert_eq!(
            v.pointer("/prestashop/product/name/language/@id"),
            Some(&json!("1"))
        );
        // An XLink is not data.
        assert_eq!(
            v.pointer("/prestashop/product/name/language/@xlink:href"),
            None
        );
        // CDATA is not unescaped; text is.
        assert_eq!(
            v.pointer("/prestashop/product/name/language/#text"),
            Some(&json!("Mug &amp; cup"))
        );
        assert_eq!(
            v.pointer("/prestashop/product/price"),
            Some(&json!("9.5 & more é"))
        );
        assert_eq!(
            v.pointer("/prestashop/product/associations/categories/category/1/id"),
            Some(&json!("3"))
        );
        assert_eq!(v.pointer("/prestashop/product/empty"), Some(&json!("")));
    }

    #[test]
    fn json_writes_as_xml_and_reads_back() {
        let body = json!({"product": {
            "reference": "MUG-1",
            "price": 9.5,
            "name": {"language": [{"@id": 1, "#text": "Mug <big> & \"cup\""}, {"@id": 2, "#text": "Caneca"}]},
            "note": null
        }});
        let xml = from_json("prestashop", &body).unwrap();
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><prestashop><product>"));
        assert!(
            xml.contains("<language id=\"1\">Mug &lt;big&gt; &amp; &quot;cup&quot;</language>")
        );
        let back = to_json(&xml).unwrap();
        assert_eq!(
            back.pointer("/prestashop/product/name/language/0/#text"),
            Some(&json!("Mug <big> & \"cup\""))
        );
        assert_eq!(
            back.pointer("/prestashop/product/price"),
            Some(&json!("9.5"))
        );
    }

    #[test]
    fn broken_documents_are_refused_with_a_reason() {
        for bad in [
            "",
            "<a><b></a>",
            "<a></a><b></b>",
            "<a>",
            "just text",
            "<a>&bogus;</a>",
        ] {
            assert!(to_json(bad).is_err(), "{bad:?} should be refused");
        }
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(to_json(&deep).unwrap_err().contains("deeper"));
        assert!(from_json("prestashop", &json!({"@bad": {"x": 1}, "#text": "t"})).is_ok());
        assert!(from_json("", &json!({})).is_err());
    }
}
