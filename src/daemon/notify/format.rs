//! Each receiver's body for an event document: Slack's Block Kit message
//! (with the `text` fallback notifications and old clients show), a Teams
//! Adaptive Card in the `message`/`attachments` envelope that Teams
//! workflows ("Post to a channel when a webhook request is received") and
//! incoming webhooks accept, and the generic webhook's document as is.
//! Pure: the same document always gives the same bytes.

use serde_json::{Value, json};

use super::Format;
use super::event::EventDocument;

/// The JSON body `format` sends for `doc`.
pub fn body(format: Format, doc: &EventDocument) -> Value {
    match format {
        Format::Slack => slack(doc),
        Format::Teams => teams(doc),
        // An EventDocument always serializes (strings, numbers, a JSON
        // value already parsed).
        Format::Webhook => serde_json::to_value(doc).unwrap_or(Value::Null),
    }
}

/// The facts every format shows beside the text.
fn facts(doc: &EventDocument) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("Service", doc.service.clone()),
        ("Rollout", doc.rollout_id.clone()),
        ("Canary", doc.canary.clone()),
        ("Baseline", doc.baseline.clone()),
        ("Weight", format!("{}%", doc.weight)),
        ("Phase", doc.phase.as_str().to_string()),
        ("Policy", doc.policy.clone()),
        ("By", doc.actor.clone()),
    ];
    if let Some(t) = &doc.ticket {
        f.push(("Ticket", t.clone()));
    }
    if doc.dry_run {
        f.push(("Dry run", "yes".into()));
    }
    f
}

/// Slack's mrkdwn treats `&`, `<` and `>` as markup.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Slack caps a header's text at 150 characters and a section's at 3000.
fn cap(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

fn slack(doc: &EventDocument) -> Value {
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": cap(&doc.title, 150), "emoji": false}}),
    ];
    if !doc.text.is_empty() {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": cap(&slack_escape(&doc.text), 3000)}}));
    }
    // A section holds at most 10 fields.
    let fields: Vec<Value> = facts(doc)
        .into_iter()
        .take(10)
        .map(|(k, v)| json!({"type": "mrkdwn", "text": format!("*{k}*\n{}", slack_escape(&v))}))
        .collect();
    blocks.push(json!({"type": "section", "fields": fields}));
    if let Some(a) = &doc.approval {
        let commands = a
            .commands
            .iter()
            .map(|c| slack_escape(c))
            .collect::<Vec<_>>()
            .join("\n");
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": cap(&format!("*To approve:*\n```{commands}```"), 3000)}}));
    }
    if !doc.details.is_empty() {
        // A context block holds at most 10 elements.
        let elements: Vec<Value> = doc
            .details
            .iter()
            .take(10)
            .map(|d| json!({"type": "mrkdwn", "text": cap(&slack_escape(d), 3000)}))
            .collect();
        blocks.push(json!({"type": "context", "elements": elements}));
    }
    let fallback = if doc.text.is_empty() {
        doc.title.clone()
    } else {
        format!("{}: {}", doc.title, doc.text)
    };
    json!({ "text": cap(&fallback, 3000), "blocks": blocks })
}

fn teams(doc: &EventDocument) -> Value {
    let mut body = vec![json!({
        "type": "TextBlock", "size": "Large", "weight": "Bolder", "text": doc.title, "wrap": true
    })];
    if !doc.text.is_empty() {
        body.push(json!({"type": "TextBlock", "text": doc.text, "wrap": true}));
    }
    let facts: Vec<Value> = facts(doc)
        .into_iter()
        .map(|(k, v)| json!({"title": k, "value": v}))
        .collect();
    body.push(json!({"type": "FactSet", "facts": facts}));
    if let Some(a) = &doc.approval {
        body.push(
            json!({"type": "TextBlock", "text": "To approve:", "weight": "Bolder", "wrap": true}),
        );
        for c in &a.commands {
            body.push(
                json!({"type": "TextBlock", "text": c, "fontType": "Monospace", "wrap": true}),
            );
        }
    }
    for d in &doc.details {
        body.push(json!({"type": "TextBlock", "text": d, "isSubtle": true, "wrap": true}));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
            }
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_text_is_escaped_and_capped() {
        assert_eq!(slack_escape("a<b>&c"), "a&lt;b&gt;&amp;c");
        assert_eq!(cap("abcdef", 4), "abc…");
        assert_eq!(cap("abc", 4), "abc");
    }
}
