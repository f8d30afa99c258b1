//! NetFlow v5, NetFlow v9 (RFC 3954) and IPFIX (RFC 7011).
//!
//! One [`NetflowDecoder`] serves every exporter of a listener: it keeps what
//! they announce (templates, sampling rates, boot times) in bounded caches keyed
//! by exporter address and observation domain, and decodes each datagram by the
//! version it starts with. Templates are compiled when they arrive (see
//! `fields`); even NetFlow v5 is decoded through a fixed compiled template, so
//! every version shares one record walker and one field mapping.
//!
//! Sets are processed in datagram order, so options and templates sent in the
//! same datagram as the data they govern (as Cisco does) apply to it.

mod data;
mod fields;
mod hold;
mod ipfix;
mod template;
mod v5;
mod v9;

use std::net::IpAddr;

use super::{Datagram, DecodeCounters, DecodeOptions, Flows};
pub use template::TemplateLimits;
use template::{
    BoundedCache, DomainKey, FieldSpec, SamplerKey, Template, TemplateKey, TemplateKind,
};

/// Why a datagram (or the rest of it) could not be decoded. Flows decoded from
/// the sets before the faulty one stay in the output.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NetflowError {
    #[error("datagram ends inside its {0}")]
    Truncated(&'static str),
    #[error("unsupported NetFlow/IPFIX version {0}")]
    BadVersion(u16),
    #[error("inconsistent length: {0}")]
    BadLength(&'static str),
    #[error("invalid template: {0}")]
    BadTemplate(&'static str),
    #[error("too many templates or sampling rates for this exporter or in total")]
    TemplateLimit,
    #[error("more than {} records in one set", data::MAX_RECORDS_PER_SET)]
    TooManyRecords,
}

impl NetflowError {
    /// A stable name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            NetflowError::Truncated(_) => "truncated",
            NetflowError::BadVersion(_) => "bad-version",
            NetflowError::BadLength(_) => "bad-length",
            NetflowError::BadTemplate(_) => "bad-template",
            NetflowError::TemplateLimit => "template-limit",
            NetflowError::TooManyRecords => "too-many-records",
        }
    }
}

/// Decodes NetFlow v5, v9 and IPFIX datagrams, remembering what exporters announce.
#[derive(Debug)]
pub struct NetflowDecoder {
    state: State,
    /// NetFlow v5 records have a fixed layout: one template compiled once.
    v5_template: Template,
}

impl NetflowDecoder {
    pub fn new(limits: TemplateLimits) -> Self {
        NetflowDecoder {
            state: State::new(limits),
            v5_template: v5::template(),
        }
    }

    /// Decodes a v5, v9 or IPFIX datagram (by its version field), appending flows to `out`.
    pub fn decode(
        &mut self,
        datagram: &Datagram,
        options: &DecodeOptions,
        out: &mut Flows,
        counters: &mut DecodeCounters,
    ) -> Result<(), NetflowError> {
        let mut output = Output {
            flows: out,
            counters,
            options,
        };
        match datagram.payload {
            [0, 5, ..] => v5::decode(&self.v5_template, datagram, &mut output),
            [0, 9, ..] => v9::decode(&mut self.state, datagram, &mut output),
            [0, 10, ..] => ipfix::decode(&mut self.state, datagram, &mut output),
            [high, low, ..] => Err(NetflowError::BadVersion(u16::from_be_bytes([*high, *low]))),
            _ => Err(NetflowError::Truncated("version")),
        }
    }

    /// Drops templates, sampling rates and boot times unseen for longer than the expiry.
    pub fn expire(&mut self, now: u64) {
        self.state.templates.expire(now);
        self.state.samplers.expire(now);
        self.state.boot_times.expire(now);
    }
}

impl Default for NetflowDecoder {
    fn default() -> Self {
        NetflowDecoder::new(TemplateLimits::default())
    }
}

/// Where decoded flows and counted events go, with the options that shape them.
struct Output<'o> {
    flows: &'o mut Flows,
    counters: &'o mut DecodeCounters,
    options: &'o DecodeOptions,
}

/// What exporters announced and the decoder keeps between datagrams.
#[derive(Debug)]
struct State {
    templates: BoundedCache<TemplateKey, Template>,
    /// Sampling rates from options records, per sampler.
    samplers: BoundedCache<SamplerKey, u64>,
    /// IPFIX systemInitTimeMilliseconds from options records, for sysUpTime-relative times.
    boot_times: BoundedCache<DomainKey, u64>,
    /// Data sets waiting for their template (empty unless the hold is on).
    early: hold::EarlyData,
    /// Reused while reading a template, so that reading one allocates nothing.
    field_specs: Vec<FieldSpec>,
}

impl State {
    fn new(limits: TemplateLimits) -> Self {
        State {
            templates: BoundedCache::new(limits),
            samplers: BoundedCache::new(limits),
            boot_times: BoundedCache::new(limits),
            early: hold::EarlyData::default(),
            field_specs: Vec::new(),
        }
    }

    /// Stores the template `field_specs` announce as `key`, compiled by
    /// `compile`; a repeat of the template in use only refreshes it.
    fn announce(
        &mut self,
        key: TemplateKey,
        kind: TemplateKind,
        compile: fn(TemplateKind, &[FieldSpec]) -> Result<Template, NetflowError>,
        now: u64,
    ) -> Result<(), NetflowError> {
        if let Some(current) = self.templates.get(&key, now)
            && current.is_announced_as(kind, &self.field_specs)
        {
            return Ok(());
        }
        let template = compile(kind, &self.field_specs)?;
        self.templates.insert(key, template, now)
    }
}

/// The exporter as caches key it: IPv4 from a dual-stack socket is IPv4.
fn exporter_of(datagram: &Datagram) -> IpAddr {
    datagram.source.ip().to_canonical()
}

fn read_u16(data: &[u8], offset: usize) -> Option<u16> {
    let bytes = data.get(offset..offset.checked_add(2)?)?;
    Some(u16::from_be_bytes(bytes.try_into().ok()?))
}

fn read_u32(data: &[u8], offset: usize) -> Option<u32> {
    let bytes = data.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// Walks the sets (v9 "FlowSets") of a v9 or IPFIX message: a 16-bit id and a
/// 16-bit length that counts the 4-byte set header. Fewer than 4 bytes, or
/// only zeros, at the end are padding.
struct Sets<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Sets<'a> {
    type Item = Result<(u16, &'a [u8]), NetflowError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < 4 {
            return None;
        }
        let id = read_u16(self.rest, 0)?;
        let length = usize::from(read_u16(self.rest, 2)?);
        if length < 4 {
            // Some exporters (Cisco ACI) pad datagrams with zeros well beyond 4 bytes.
            let padding = self.rest.iter().all(|&byte| byte == 0);
            self.rest = &[];
            if padding {
                return None;
            }
            return Some(Err(NetflowError::BadLength("set shorter than its header")));
        }
        let Some((set, rest)) = self.rest.split_at_checked(length) else {
            self.rest = &[];
            return Some(Err(NetflowError::BadLength("set beyond the datagram")));
        };
        self.rest = rest;
        Some(Ok((id, set.get(4..).unwrap_or_default())))
    }
}

#[cfg(test)]
mod tests;
