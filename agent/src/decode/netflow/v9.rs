//! NetFlow v9 (RFC 3954): a 20-byte header, then FlowSets: templates (id 0),
//! options templates (id 1) and data (id ≥ 256).

use super::data::{FIRST_DATA_SET, Message, TemplateSets, decode_sets};
use super::fields::VARIABLE_LENGTH;
use super::template::{FieldSpec, MAX_TEMPLATE_FIELDS, Template, TemplateKind};
use super::{NetflowError, Output, State, read_u16, read_u32};
use crate::decode::Datagram;

const HEADER_LENGTH: usize = 20;

/// v9's template FlowSets, for the walker shared with IPFIX.
const SETS: TemplateSets = TemplateSets {
    template: 0,
    options: 1,
    read: read_template_set,
};

/// v9 field types above this are vendor-specific (Cisco uses 33000–40000 and more).
const LAST_STANDARD_TYPE: u16 = 32767;

pub(super) fn decode(
    state: &mut State,
    datagram: &Datagram,
    output: &mut Output,
) -> Result<(), NetflowError> {
    let (header, body) = datagram
        .payload
        .split_at_checked(HEADER_LENGTH)
        .ok_or(NetflowError::Truncated("header"))?;
    let field = |offset| read_u32(header, offset).unwrap_or_default();
    let (sys_uptime, unix_secs, sequence, source_id) = (field(4), field(8), field(12), field(16));
    let export_millis = u64::from(unix_secs) * 1000;
    let boot_millis = export_millis.checked_sub(u64::from(sys_uptime));
    let message = Message::new(
        datagram,
        body,
        source_id,
        sequence,
        export_millis,
        boot_millis,
    );
    decode_sets(state, &SETS, &message, output)
}

/// v9 lays templates and options templates out differently: one reader each.
fn read_template_set(
    state: &mut State,
    content: &[u8],
    kind: TemplateKind,
    message: &Message,
) -> Result<(), NetflowError> {
    match kind {
        TemplateKind::Data => read_templates(state, content, message),
        TemplateKind::Options => read_options_templates(state, content, message),
    }
}

/// Reads the templates of a template FlowSet: id, field count, then (type, length) pairs.
fn read_templates(
    state: &mut State,
    mut content: &[u8],
    message: &Message,
) -> Result<(), NetflowError> {
    while let (Some(id), Some(count)) = (read_u16(content, 0), read_u16(content, 2)) {
        if id == 0 && count == 0 {
            break; // padding
        }
        check_id(id)?;
        let count = usize::from(count);
        if count == 0 || count > MAX_TEMPLATE_FIELDS {
            return Err(NetflowError::BadTemplate("field count"));
        }
        let fields = content
            .get(4..4 + count * 4)
            .ok_or(NetflowError::Truncated("template"))?;
        state.field_specs.clear();
        state
            .field_specs
            .extend(fields.chunks_exact(4).map(standard_field));
        state.announce(message.key(id), TemplateKind::Data, compile, message.now)?;
        content = content.get(4 + count * 4..).unwrap_or_default();
    }
    Ok(())
}

/// Reads the options templates of an options FlowSet: id, scope length and
/// options length (in bytes), scope fields, option fields. Scope field types
/// (system, interface, line card…) are not information elements: never mapped.
fn read_options_templates(
    state: &mut State,
    mut content: &[u8],
    message: &Message,
) -> Result<(), NetflowError> {
    while let (Some(id), Some(scope_length), Some(options_length)) = (
        read_u16(content, 0),
        read_u16(content, 2),
        read_u16(content, 4),
    ) {
        if id == 0 {
            break; // padding
        }
        check_id(id)?;
        let (scope_length, options_length) =
            (usize::from(scope_length), usize::from(options_length));
        if scope_length % 4 != 0 || options_length % 4 != 0 {
            return Err(NetflowError::BadTemplate("options template lengths"));
        }
        if (scope_length + options_length) / 4 > MAX_TEMPLATE_FIELDS {
            return Err(NetflowError::BadTemplate("field count"));
        }
        let end = 6 + scope_length + options_length;
        let fields = content
            .get(6..end)
            .ok_or(NetflowError::Truncated("options template"))?;
        let (scope, options) = fields.split_at(scope_length);
        state.field_specs.clear();
        state
            .field_specs
            .extend(scope.chunks_exact(4).map(|field| FieldSpec {
                standard: false,
                ..standard_field(field)
            }));
        state
            .field_specs
            .extend(options.chunks_exact(4).map(standard_field));
        state.announce(message.key(id), TemplateKind::Options, compile, message.now)?;
        content = content.get(end..).unwrap_or_default();
    }
    Ok(())
}

/// Compiles a v9 template. v9 has no variable-length fields: a length of 65535
/// (IPFIX's marker) could never fit in a datagram, so it is refused.
fn compile(kind: TemplateKind, fields: &[FieldSpec]) -> Result<Template, NetflowError> {
    if fields.iter().any(|field| field.length == VARIABLE_LENGTH) {
        return Err(NetflowError::BadTemplate("field longer than a datagram"));
    }
    Template::compile(kind, fields)
}

fn check_id(id: u16) -> Result<(), NetflowError> {
    if id < FIRST_DATA_SET {
        return Err(NetflowError::BadTemplate("template id below 256"));
    }
    Ok(())
}

/// A (type, length) pair of a template; `field` is 4 bytes long.
fn standard_field(field: &[u8]) -> FieldSpec {
    let element = read_u16(field, 0).unwrap_or_default();
    FieldSpec {
        element,
        length: read_u16(field, 2).unwrap_or_default(),
        standard: element <= LAST_STANDARD_TYPE,
    }
}
