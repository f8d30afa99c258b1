//! Data sets, shared by NetFlow v9 and IPFIX: records of a data template become
//! flows, records of an options template update what the decoder knows of the
//! exporter (sampling rates per sampler, boot time).

use std::net::IpAddr;

use super::fields::{ExportContext, Record};
use super::template::{BoundedCache, DomainKey, SamplerKey, TemplateKey, TemplateKind};
use super::{NetflowError, Output, Sets, State, exporter_of};
use crate::decode::{Datagram, TimestampSource, address_octets};

/// Records allowed in one set: a 64 KB datagram of tiny records must not turn
/// into tens of thousands of flows (real sets hold at most a few hundred).
pub(crate) const MAX_RECORDS_PER_SET: usize = 4096;

/// Set ids from which on sets carry data records, in v9 and IPFIX alike.
pub(super) const FIRST_DATA_SET: u16 = 256;

/// What tells NetFlow v9 and IPFIX apart once their headers are read: the ids of
/// their template sets and how template records are laid out.
pub(super) struct TemplateSets {
    pub template: u16,
    pub options: u16,
    /// Reads the template records of a template (`Data`) or options template
    /// (`Options`) set into the cache.
    pub read: fn(&mut State, &[u8], TemplateKind, &Message) -> Result<(), NetflowError>,
}

/// A v9 or IPFIX message past its header: the sets, and what scopes and dates them.
pub(super) struct Message<'a> {
    pub body: &'a [u8],
    pub exporter: IpAddr,
    /// Source id (v9) or observation domain (IPFIX).
    pub domain: u32,
    pub context: ExportContext,
    /// Reception time, in seconds since the Unix epoch.
    pub now: u64,
}

impl<'a> Message<'a> {
    /// The message of `datagram` whose sets are `body`, with its header's values.
    pub fn new(
        datagram: &Datagram,
        body: &'a [u8],
        domain: u32,
        sequence_number: u32,
        export_millis: u64,
        boot_millis: Option<u64>,
    ) -> Self {
        let exporter = exporter_of(datagram);
        Message {
            body,
            exporter,
            domain,
            context: ExportContext {
                exporter: address_octets(exporter),
                observation_domain: domain,
                sequence_number,
                export_millis,
                boot_millis,
                received: datagram.received,
            },
            now: datagram.received,
        }
    }

    /// The cache key of this message's template `id`.
    pub fn key(&self, id: u16) -> TemplateKey {
        TemplateKey {
            exporter: self.exporter,
            domain: self.domain,
            id,
        }
    }
}

/// Walks the sets of a v9 or IPFIX message in order: templates enter the cache
/// (and release the data held for them), data sets become flows or options.
pub(super) fn decode_sets(
    state: &mut State,
    sets: &TemplateSets,
    message: &Message,
    output: &mut Output,
) -> Result<(), NetflowError> {
    expire_early(state, message.now, output);
    for set in (Sets { rest: message.body }) {
        let (set_id, content) = set?;
        let kind = match set_id {
            FIRST_DATA_SET.. => {
                let key = message.key(set_id);
                decode_data_set(state, key, content, &message.context, message.now, output)?;
                continue;
            }
            id if id == sets.template => TemplateKind::Data,
            id if id == sets.options => TemplateKind::Options,
            _ => continue, // reserved
        };
        (sets.read)(state, content, kind, message)?;
        decode_early(state, output);
    }
    Ok(())
}

/// Decodes the records of one data set with the template `key` names; a set
/// whose template is unknown is counted in `template_misses`, and held for it
/// when the options ask (see `hold`), skipped otherwise.
pub(super) fn decode_data_set(
    state: &mut State,
    key: TemplateKey,
    records: &[u8],
    export: &ExportContext,
    now: u64,
    output: &mut Output,
) -> Result<(), NetflowError> {
    let State {
        templates,
        samplers,
        boot_times,
        early,
        ..
    } = state;
    let Some(template) = templates.get(&key, now) else {
        output.counters.template_misses += 1;
        if output.options.hold_early_data_seconds > 0 {
            early.hold(key, records, export, now, output.counters);
        }
        return Ok(());
    };
    let domain = DomainKey {
        exporter: key.exporter,
        domain: key.domain,
    };
    let mut export = *export;
    if export.boot_millis.is_none() {
        export.boot_millis = boot_times.get(&domain, now).copied();
    }
    let time_from_flow = output.options.timestamps == TimestampSource::Flow;
    let default_rate = output.options.default_sampling_rate.max(1);

    // Rates cannot change within a data set (options come in sets of their
    // own): one lookup per sampler id met, not one per record.
    let mut last_lookup: Option<(Option<u64>, Option<u64>)> = None;
    let mut record = Record::default();
    let mut rest = records;
    let mut count = 0usize;
    while rest.len() >= template.min_record_length {
        let Some(used) = template.read_record(rest, &mut record) else {
            output.counters.skipped_records += 1;
            break;
        };
        rest = rest.get(used..).unwrap_or_default();
        count += 1;
        if count > MAX_RECORDS_PER_SET {
            return Err(NetflowError::TooManyRecords);
        }
        match template.kind {
            TemplateKind::Options => remember_options(&record, domain, now, samplers, boot_times)?,
            TemplateKind::Data => {
                let stated = template
                    .states_sampling
                    .then(|| record.sampling_rate())
                    .flatten();
                let rate = match stated {
                    Some(rate) => rate,
                    None => match last_lookup {
                        Some((sampler, rate)) if sampler == record.sampler_id() => rate,
                        _ => {
                            let rate = announced_rate(samplers, domain, record.sampler_id(), now);
                            last_lookup = Some((record.sampler_id(), rate));
                            rate
                        }
                    }
                    .unwrap_or(default_rate),
                };
                record.push_flow(output.flows, &export, rate, time_from_flow);
            }
        }
    }
    Ok(())
}

/// Keeps the sampling rate and boot time an options record announces. A rate is
/// kept for its sampler (0 when the record names none) and as the domain's
/// latest rate, the fallback for flows that name no known sampler.
fn remember_options(
    record: &Record,
    domain: DomainKey,
    now: u64,
    samplers: &mut BoundedCache<SamplerKey, u64>,
    boot_times: &mut BoundedCache<DomainKey, u64>,
) -> Result<(), NetflowError> {
    if let Some(rate) = record.sampling_rate() {
        for sampler in [Some(record.sampler_id().unwrap_or(0)), None] {
            let key = SamplerKey {
                exporter: domain.exporter,
                domain: domain.domain,
                sampler,
            };
            samplers.insert(key, rate, now)?;
        }
    }
    if let Some(boot) = record.system_init_millis() {
        boot_times.insert(domain, boot, now)?;
    }
    Ok(())
}

/// The rate announced for the record's sampler, else the domain's latest one.
fn announced_rate(
    samplers: &mut BoundedCache<SamplerKey, u64>,
    domain: DomainKey,
    sampler_id: Option<u64>,
    now: u64,
) -> Option<u64> {
    let key = |sampler| SamplerKey {
        exporter: domain.exporter,
        domain: domain.domain,
        sampler,
    };
    if let Some(id) = sampler_id
        && let Some(rate) = samplers.get(&key(Some(id)), now)
    {
        return Some(*rate);
    }
    samplers.get(&key(None), now).copied()
}
/// Forgets the held sets that waited too long at `now`: called as each v9/IPFIX
/// datagram arrives, so the drops are counted with it.
fn expire_early(state: &mut State, now: u64, output: &mut Output) {
    if !state.early.is_empty() {
        let hold = output.options.hold_early_data_seconds;
        state.early.expire(now, hold, output.counters);
    }
}

/// Decodes the held sets whose template a template set just made known. A held
/// set that turns out malformed is counted as dropped: it must not cost the
/// datagram that brought the template its own sets.
fn decode_early(state: &mut State, output: &mut Output) {
    if state.early.is_empty() {
        return;
    }
    let templates = &state.templates;
    let ready = state.early.take_ready(|key| templates.contains(key));
    for set in ready {
        match decode_data_set(
            state,
            set.key,
            &set.records,
            &set.export,
            set.received,
            output,
        ) {
            Ok(()) => output.counters.early_sets_decoded += 1,
            Err(_) => output.counters.early_sets_dropped += 1,
        }
    }
}
