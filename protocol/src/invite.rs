//! Invitations: join tokens a project's coordinator signs and an institution hands to its
//! machines. A token names the organisation and the tier its holders join as, so what the
//! ledger says about them is attested by the coordinator, not claimed by the node.

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::id::{from_hex_vec, to_hex};
use crate::keys::{Keypair, PublicKey, Signature};
use crate::messages::Tier;

/// What every invitation token starts with, so a pasted token is recognisable.
pub const TOKEN_PREFIX: &str = "canopy-invite-";
/// The longest token accepted (checked before decoding anything).
pub const MAX_TOKEN_LEN: usize = 1024;
/// The longest organisation name in a token.
pub const MAX_ORGANISATION: usize = 128;

/// What an invitation grants, as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteTerms {
    /// The project it opens (a token of one project does not open another).
    pub project: String,
    /// The organisation its holders are recorded under.
    pub organisation: String,
    /// The tier its holders join as.
    pub tier: Tier,
    /// When it stops admitting new nodes (Unix milliseconds).
    pub expires_at_ms: u64,
    /// How many distinct nodes it admits.
    pub max_uses: u32,
    /// Names this invitation (for counting its uses and revoking it).
    pub id: [u8; 16],
}

/// An invitation: its terms, signed by the coordinator that issued it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// What it grants.
    pub terms: InviteTerms,
    /// The issuing coordinator's key.
    pub issuer: PublicKey,
    /// The issuer's signature over the encoded terms.
    pub signature: Signature,
}

/// Why an invitation is not honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InviteError {
    /// Not a token at all (wrong prefix, not hex, too long, or malformed inside).
    #[error("not a Canopy invitation token: {0}")]
    Malformed(String),
    /// Terms that cannot be issued (empty or overlong organisation, no uses).
    #[error("invitation terms refused: {0}")]
    Terms(String),
    /// Issued by another coordinator.
    #[error("this invitation was issued by another coordinator")]
    WrongIssuer,
    /// The signature does not verify.
    #[error("this invitation's signature does not verify")]
    BadSignature,
    /// Issued for another project.
    #[error("this invitation is for project {0:?}")]
    WrongProject(String),
    /// Past its expiry.
    #[error("this invitation expired")]
    Expired,
}

impl InviteTerms {
    fn check(&self) -> Result<(), InviteError> {
        let org = self.organisation.trim();
        if org.is_empty() || org.len() > MAX_ORGANISATION || org.chars().any(char::is_control) {
            return Err(InviteError::Terms(format!(
                "the organisation must be 1 to {MAX_ORGANISATION} printable bytes"
            )));
        }
        if self.project.len() > MAX_ORGANISATION {
            return Err(InviteError::Terms("project name too long".into()));
        }
        if self.max_uses == 0 {
            return Err(InviteError::Terms(
                "an invitation admits at least one node".into(),
            ));
        }
        Ok(())
    }

    /// The invitation's id in hex, as the coordinator lists it.
    pub fn id_hex(&self) -> String {
        to_hex(&self.id)
    }
}

impl Invite {
    /// Signs `terms` with the coordinator's `keys`.
    pub fn issue(keys: &Keypair, terms: InviteTerms) -> Result<Self, InviteError> {
        terms.check()?;
        let body = codec::encode(&terms).map_err(|e| InviteError::Terms(e.to_string()))?;
        Ok(Self {
            signature: keys.sign(&body),
            issuer: keys.public(),
            terms,
        })
    }

    /// The token to hand out: [`TOKEN_PREFIX`] and the signed invitation in hex.
    pub fn to_token(&self) -> Result<String, InviteError> {
        let frame = codec::encode(self).map_err(|e| InviteError::Malformed(e.to_string()))?;
        Ok(format!("{TOKEN_PREFIX}{}", to_hex(&frame)))
    }

    /// Reads a token, bounded before anything is decoded; checks nothing but its form.
    pub fn from_token(token: &str) -> Result<Self, InviteError> {
        let token = token.trim();
        if token.len() > MAX_TOKEN_LEN {
            return Err(InviteError::Malformed(format!(
                "{} characters, at most {MAX_TOKEN_LEN}",
                token.len()
            )));
        }
        let hex = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or_else(|| InviteError::Malformed(format!("it does not start {TOKEN_PREFIX}")))?;
        let frame = from_hex_vec(hex).map_err(|e| InviteError::Malformed(e.to_string()))?;
        codec::decode::<Self, MAX_TOKEN_LEN>(&frame)
            .map_err(|e| InviteError::Malformed(e.to_string()))
    }

    /// The terms, if this invitation was signed by `issuer` for `project` and is valid at
    /// `now_ms`. Uses are counted by whoever keeps the ledger.
    pub fn verify(
        &self,
        issuer: &PublicKey,
        project: &str,
        now_ms: u64,
    ) -> Result<&InviteTerms, InviteError> {
        if &self.issuer != issuer {
            return Err(InviteError::WrongIssuer);
        }
        let body = codec::encode(&self.terms).map_err(|e| InviteError::Malformed(e.to_string()))?;
        if !issuer.verify(&body, &self.signature) {
            return Err(InviteError::BadSignature);
        }
        self.terms.check()?;
        if self.terms.project != project {
            return Err(InviteError::WrongProject(self.terms.project.clone()));
        }
        if now_ms >= self.terms.expires_at_ms {
            return Err(InviteError::Expired);
        }
        Ok(&self.terms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms() -> InviteTerms {
        InviteTerms {
            project: "bloom-mini".into(),
            organisation: "Institut du Développement".into(),
            tier: Tier::Datacenter,
            expires_at_ms: 2_000,
            max_uses: 8,
            id: [7; 16],
        }
    }

    #[test]
    fn a_token_round_trips_and_verifies_for_its_project_until_it_expires() {
        let keys = Keypair::generate().expect("keys");
        let token = Invite::issue(&keys, terms())
            .expect("issue")
            .to_token()
            .expect("token");
        assert!(token.starts_with(TOKEN_PREFIX) && token.len() <= MAX_TOKEN_LEN);
        let invite = Invite::from_token(&format!("  {token}\n")).expect("parse");
        assert_eq!(
            invite.verify(&keys.public(), "bloom-mini", 1_999),
            Ok(&terms())
        );
        assert_eq!(
            invite.verify(&keys.public(), "bloom-mini", 2_000),
            Err(InviteError::Expired)
        );
        assert!(matches!(
            invite.verify(&keys.public(), "other", 0),
            Err(InviteError::WrongProject(_))
        ));
        let other = Keypair::generate().expect("keys");
        assert_eq!(
            invite.verify(&other.public(), "bloom-mini", 0),
            Err(InviteError::WrongIssuer)
        );
    }

    #[test]
    fn altered_terms_or_a_forged_issuer_do_not_verify() {
        let keys = Keypair::generate().expect("keys");
        let invite = Invite::issue(&keys, terms()).expect("issue");
        let mut raised = invite.clone();
        raised.terms.max_uses = 1_000_000;
        assert_eq!(
            raised.verify(&keys.public(), "bloom-mini", 0),
            Err(InviteError::BadSignature)
        );
        let mut renamed = invite.clone();
        renamed.terms.organisation = "Someone Else".into();
        assert_eq!(
            renamed.verify(&keys.public(), "bloom-mini", 0),
            Err(InviteError::BadSignature)
        );
        // A token re-signed by an attacker names the attacker as issuer.
        let attacker = Keypair::generate().expect("keys");
        let forged = Invite::issue(&attacker, terms()).expect("issue");
        assert_eq!(
            forged.verify(&keys.public(), "bloom-mini", 0),
            Err(InviteError::WrongIssuer)
        );
    }

    #[test]
    fn garbage_tokens_are_refused_before_decoding() {
        for bad in [
            "",
            "hello",
            "canopy-invite-",
            "canopy-invite-zz",
            "canopy-invite-00ff",
            &format!("canopy-invite-{}", "ab".repeat(MAX_TOKEN_LEN)),
        ] {
            assert!(
                matches!(Invite::from_token(bad), Err(InviteError::Malformed(_))),
                "{bad:.40}"
            );
        }
        let keys = Keypair::generate().expect("keys");
        for bad in [
            InviteTerms {
                organisation: " ".into(),
                ..terms()
            },
            InviteTerms {
                max_uses: 0,
                ..terms()
            },
            InviteTerms {
                organisation: "x".repeat(MAX_ORGANISATION + 1),
                ..terms()
            },
        ] {
            assert!(matches!(
                Invite::issue(&keys, bad),
                Err(InviteError::Terms(_))
            ));
        }
    }
}
