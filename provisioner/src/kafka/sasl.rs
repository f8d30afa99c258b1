//! SASL over Kafka: SaslHandshake v1 names the mechanism, then each message of the
//! exchange (PLAIN, or SCRAM from the `rsasl` crate) travels in a SaslAuthenticate.

use std::io::Cursor;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;
use rsasl::prelude::{Mechname, SASLClient, SASLConfig, Session};

use super::connection::Connection;
use super::{KafkaError, KafkaSasl};

/// Authenticates `connection` with `credentials`; the error never carries the password.
pub(super) async fn authenticate(
    connection: &mut Connection,
    credentials: &KafkaSasl,
) -> Result<(), KafkaError> {
    let mechanism = credentials.mechanism.name();
    if connection.version::<SaslHandshakeRequest>() < Some(1) {
        return Err(KafkaError::Unsupported {
            broker: connection.broker().to_owned(),
            api: "SaslHandshake v1",
            purpose: "authenticate with SASL",
        });
    }
    let handshake =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
    let (response, _) = connection.call(&handshake, "SaslHandshake").await?;
    if response.error_code != 0 {
        let offered: Vec<&str> = response.mechanisms.iter().map(|m| m.as_str()).collect();
        connection.check(
            format_args!("SaslHandshake {mechanism} (the broker offers {offered:?})"),
            response.error_code,
            None,
        )?;
    }
    let mut session = session(credentials).map_err(|e| connection.error(e))?;
    let mut received: Option<Bytes> = None;
    loop {
        let mut message = Cursor::new(Vec::new());
        let state = session
            .step(received.as_deref(), &mut message)
            .map_err(|e| connection.error(format!("SASL {mechanism}: {e}")))?;
        if state.has_sent_message() {
            let request = SaslAuthenticateRequest::default()
                .with_auth_bytes(Bytes::from(message.into_inner()));
            let (response, _) = connection.call(&request, "SaslAuthenticate").await?;
            connection.check(
                format_args!(
                    "SASL {mechanism} authentication as {}",
                    credentials.username
                ),
                response.error_code,
                response.error_message.as_ref(),
            )?;
            received = Some(response.auth_bytes);
        }
        if state.is_finished() {
            return Ok(());
        }
    }
}

/// The client side of the exchange for the configured mechanism.
fn session(credentials: &KafkaSasl) -> Result<Session, String> {
    let config: Arc<SASLConfig> = SASLConfig::with_credentials(
        None,
        credentials.username.clone(),
        credentials.password.clone(),
    )
    .map_err(|e| format!("SASL settings: {e}"))?;
    let name = Mechname::parse(credentials.mechanism.name().as_bytes())
        .map_err(|e| format!("SASL mechanism: {e}"))?;
    SASLClient::new(config)
        .start_suggested(&[name])
        .map_err(|e| format!("SASL {}: {e}", credentials.mechanism.name()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::kafka::SaslMechanism;

    fn first_message(mechanism: SaslMechanism) -> String {
        let credentials = KafkaSasl {
            mechanism,
            username: "flow-user".into(),
            password: "pa55".into(),
        };
        let mut session = session(&credentials).unwrap();
        assert_eq!(
            session.get_mechname().as_str(),
            mechanism.name(),
            "the session runs the configured mechanism"
        );
        let mut message = Cursor::new(Vec::new());
        let state = session.step(None, &mut message).unwrap();
        assert!(state.has_sent_message());
        String::from_utf8(message.into_inner()).unwrap()
    }

    #[test]
    fn plain_sends_user_and_password() {
        assert_eq!(first_message(SaslMechanism::Plain), "\0flow-user\0pa55");
    }

    #[test]
    fn scram_starts_with_the_user_and_a_nonce_never_the_password() {
        for mechanism in [SaslMechanism::ScramSha256, SaslMechanism::ScramSha512] {
            let first = first_message(mechanism);
            assert!(first.starts_with("n,,n=flow-user,r="), "{first}");
            assert!(first.len() > "n,,n=flow-user,r=".len() + 8, "{first}");
            assert!(!first.contains("pa55"), "{first}");
        }
    }
}
