//! IPFIX (RFC 7011): a 16-bit message header, then sets: templates (id 2),
//! options templates (id 3) and data (id ≥ 256). Field specifiers may carry an
//! enterprise number; a template record with no fields withdraws templates.

use super::data::{FIRST_DATA_SET, Message, TemplateSets, decode_sets};
use super::template::{FieldSpec, MAX_TEMPLATE_FIELDS, Template, TemplateKey, TemplateKind};
use super::{NetflowError, Output, State, read_u16, read_u32};
use crate::decode::Datagram;

const HEADER_LENGTH: usize = 16;
const TEMPLATE_SET: u16 = 2;
const OPTIONS_TEMPLATE_SET: u16 = 3;
const ENTERPRISE_BIT: u16 = 0x8000;

/// IPFIX's template sets, for the walker shared with v9.
const SETS: TemplateSets = TemplateSets {
    template: TEMPLATE_SET,
    options: OPTIONS_TEMPLATE_SET,
    read: read_templates,
};

pub(super) fn decode(
    state: &mut State,
    datagram: &Datagram,
    output: &mut Output,
) -> Result<(), NetflowError> {
    let payload = datagram.payload;
    let header = payload
        .get(..HEADER_LENGTH)
        .ok_or(NetflowError::Truncated("header"))?;
    let length = usize::from(read_u16(header, 2).unwrap_or_default());
    if length < HEADER_LENGTH {
        return Err(NetflowError::BadLength("message shorter than its header"));
    }
    let body = payload
        .get(HEADER_LENGTH..length)
        .ok_or(NetflowError::BadLength("message beyond the datagram"))?;
    let field = |offset| read_u32(header, offset).unwrap_or_default();
    let (export_time, sequence, domain) = (field(4), field(8), field(12));
    // boot_millis comes from systemInitTimeMilliseconds, in options or in the record.
    let message = Message::new(
        datagram,
        body,
        domain,
        sequence,
        u64::from(export_time) * 1000,
        None,
    );
    decode_sets(state, &SETS, &message, output)
}

/// Reads the template records of a template or options template set. Each has
/// an id and a field count (then, for options, a scope field count); a field
/// count of 0 withdraws the template, or all of the set's kind when the id is
/// the set id (RFC 7011 §8.1).
fn read_templates(
    state: &mut State,
    mut content: &[u8],
    kind: TemplateKind,
    message: &Message,
) -> Result<(), NetflowError> {
    let header_length = match kind {
        TemplateKind::Data => 4,
        TemplateKind::Options => 6,
    };
    // Withdrawing all templates scans the cache: once per set is enough.
    let mut withdrew_all = false;
    while content.len() >= 4 {
        let id = read_u16(content, 0).unwrap_or_default();
        let count = usize::from(read_u16(content, 2).unwrap_or_default());
        if count == 0 {
            if !withdrew_all {
                withdrew_all = withdraw(state, kind, message.key(id));
            }
            content = content.get(4..).unwrap_or_default();
            continue;
        }
        if id < FIRST_DATA_SET {
            return Err(NetflowError::BadTemplate("template id below 256"));
        }
        if count > MAX_TEMPLATE_FIELDS {
            return Err(NetflowError::BadTemplate("field count"));
        }
        if kind == TemplateKind::Options {
            let scope_count = usize::from(
                read_u16(content, 4).ok_or(NetflowError::Truncated("options template"))?,
            );
            if scope_count == 0 || scope_count > count {
                return Err(NetflowError::BadTemplate("scope field count"));
            }
        }
        let mut fields = content
            .get(header_length..)
            .ok_or(NetflowError::Truncated("template"))?;
        state.field_specs.clear();
        for _ in 0..count {
            let (spec, rest) = read_field_specifier(fields)?;
            state.field_specs.push(spec);
            fields = rest;
        }
        state.announce(message.key(id), kind, Template::compile, message.now)?;
        content = fields;
    }
    Ok(())
}

/// Reads one field specifier: element id (top bit: an enterprise number
/// follows), length, enterprise number. Enterprise elements are not interpreted.
fn read_field_specifier(data: &[u8]) -> Result<(FieldSpec, &[u8]), NetflowError> {
    let truncated = NetflowError::Truncated("template");
    let element = read_u16(data, 0).ok_or(truncated.clone())?;
    let length = read_u16(data, 2).ok_or(truncated.clone())?;
    let enterprise = element & ENTERPRISE_BIT != 0;
    let used = if enterprise { 8 } else { 4 };
    let rest = data.get(used..).ok_or(truncated)?;
    let spec = FieldSpec {
        element: element & !ENTERPRISE_BIT,
        length,
        standard: !enterprise,
    };
    Ok((spec, rest))
}

/// Forgets one template, or every template of the kind when `key.id` is the
/// set id (then returns true).
fn withdraw(state: &mut State, kind: TemplateKind, key: TemplateKey) -> bool {
    let set_id = match kind {
        TemplateKind::Data => TEMPLATE_SET,
        TemplateKind::Options => OPTIONS_TEMPLATE_SET,
    };
    if key.id != set_id {
        state.templates.remove(&key);
        return false;
    }
    state.templates.retain(|cached, template, _| {
        !(cached.exporter == key.exporter && cached.domain == key.domain && template.kind == kind)
    });
    true
}
