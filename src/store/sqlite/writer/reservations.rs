//! Reservation writes: create (with the capacity check), change and cancel.
//! New reservations are buffered and inserted with one statement per group.

use uuid::Uuid;

use super::{
    Booking, Change, Changed, EntityKind, OpResult, Outcome, PendingInsert, WriterTask,
    check_bookable, check_version, full, not_found,
};
use crate::{
    domain::{
        auth::Principal,
        capacity::{Hold, fits},
        reservation::{Reservation, ReservationPatch, Status},
        time::{micros, now},
        version::VersionMatch,
    },
    error::AppError,
    store::sqlite::{queries, rows},
};
use anyhow::Context;
use sqlx::{query, query_scalar};

impl WriterTask {
    pub(super) async fn create_reservation(
        &mut self,
        booking: &Booking,
    ) -> anyhow::Result<Result<(Reservation, Change), AppError>> {
        let new = &booking.new;
        let user_id = booking.user_id.as_str();
        let request_hash = new.fingerprint(user_id);

        if let Some(id) = new.id
            && let Some((reservation, stored_hash)) = self.existing(id).await?
        {
            return Ok(if stored_hash == rows::hex(&request_hash) {
                Ok((reservation, Change::Replayed))
            } else {
                Err(AppError::Conflict(format!(
                    "reservation {id} already exists with different content"
                )))
            });
        }
        let Some(resource) = self.resource(new.resource_id).await? else {
            return Ok(Err(AppError::validation(
                "resource_id",
                "no resource with this id exists",
            )));
        };
        if let Err(error) = check_bookable(&resource, new.starts_at, new.ends_at) {
            return Ok(Err(error));
        }
        let (start, end) = (micros(new.starts_at), micros(new.ends_at));
        let holds = self.holds(resource.id, start, end, None).await?;
        if !fits(holds, start, end, new.party_size, resource.capacity) {
            return Ok(Err(full(&resource, new.party_size)));
        }
        let at = now();
        if !booking.exempt
            && let Err(over) = self.quotas.check(user_id, resource.id, micros(at))
        {
            metrics::counter!("reservoir_rate_limited_total", "limit" => over.quota).increment(1);
            return Ok(Err(AppError::RateLimited {
                detail: format!("{} is limited to {}", over.quota, over.limit),
                retry_after_secs: over.retry_after_secs,
            }));
        }
        let reservation = Reservation {
            id: new.id.unwrap_or_else(Uuid::now_v7),
            resource_id: resource.id,
            user_id: user_id.to_owned(),
            starts_at: new.starts_at,
            ends_at: new.ends_at,
            party_size: new.party_size,
            status: Status::Confirmed,
            version: 1,
            sync_state: self.dirty_state(),
            notes: new.notes.clone(),
            metadata: new.metadata.clone(),
            created_at: at,
            updated_at: at,
        };
        if !booking.exempt {
            self.quotas.record(user_id, resource.id, micros(at));
        }
        self.enqueue(EntityKind::Reservation, reservation.id, reservation.version);
        self.changed(&reservation, &[]);
        self.pending.push(PendingInsert {
            reservation: reservation.clone(),
            request_hash,
        });
        Ok(Ok((reservation, Change::Created)))
    }

    /// A reservation by id with its create fingerprint, looking at this
    /// transaction's unflushed inserts first.
    pub(super) async fn existing(
        &mut self,
        id: Uuid,
    ) -> anyhow::Result<Option<(Reservation, String)>> {
        if let Some(pending) = self.pending.iter().find(|p| p.reservation.id == id) {
            return Ok(Some((
                pending.reservation.clone(),
                rows::hex(&pending.request_hash),
            )));
        }
        let hash: Option<String> =
            query_scalar("SELECT request_hash FROM reservations WHERE id = ?1")
                .bind(id.hyphenated().to_string())
                .fetch_optional(&mut self.conn)
                .await?;
        let Some(hash) = hash else { return Ok(None) };
        let reservation = queries::reservation(&mut self.conn, id)
            .await?
            .context("reservation vanished inside the write transaction")?;
        Ok(Some((reservation, hash)))
    }

    /// Confirmed holds overlapping [start, end): committed rows plus this
    /// transaction's unflushed inserts.
    pub(super) async fn holds(
        &mut self,
        resource_id: Uuid,
        start: i64,
        end: i64,
        exclude: Option<Uuid>,
    ) -> anyhow::Result<Vec<Hold>> {
        let mut holds = queries::holds(&mut self.conn, resource_id, start, end, exclude).await?;
        holds.extend(
            self.pending
                .iter()
                .map(|p| &p.reservation)
                .filter(|r| r.resource_id == resource_id && r.holds_capacity())
                .map(|r| Hold {
                    start: micros(r.starts_at),
                    end: micros(r.ends_at),
                    size: r.party_size,
                })
                .filter(|h| h.start < end && h.end > start),
        );
        Ok(holds)
    }

    /// Writes the buffered inserts with one statement.
    pub(super) async fn flush_reservations(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rows: Vec<serde_json::Value> = self
            .pending
            .iter()
            .map(|p| rows::reservation_json(&p.reservation, &p.request_hash))
            .collect();
        query(
            "INSERT INTO reservations (id, resource_id, user_id, starts_at, ends_at, party_size, status, version, \
             sync_state, notes, metadata, request_hash, created_at, updated_at) \
             SELECT value ->> 'id', value ->> 'resource_id', value ->> 'user_id', value ->> 'starts_at', \
             value ->> 'ends_at', value ->> 'party_size', value ->> 'status', value ->> 'version', \
             value ->> 'sync_state', value ->> 'notes', value ->> 'metadata', value ->> 'request_hash', \
             value ->> 'created_at', value ->> 'updated_at' FROM json_each(?1)",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .execute(&mut self.conn)
        .await
        .context("inserting reservations")?;
        self.pending.clear();
        Ok(())
    }

    /// Loads a reservation the principal may act on (others' are "not found").
    pub(super) async fn owned(
        &mut self,
        principal: &Principal,
        id: Uuid,
    ) -> anyhow::Result<Option<Reservation>> {
        // Updates read committed rows: make this transaction's inserts visible.
        self.flush_reservations().await?;
        Ok(queries::reservation(&mut self.conn, id)
            .await?
            .filter(|r| principal.owns(&r.user_id)))
    }

    pub(super) async fn update_reservation(
        &mut self,
        principal: &Principal,
        id: Uuid,
        patch: &ReservationPatch,
        if_match: Option<&VersionMatch>,
    ) -> anyhow::Result<OpResult> {
        let Some(current) = self.owned(principal, id).await? else {
            return Ok(Err(not_found("reservation", id)));
        };
        if let Err(error) = check_version(if_match, current.version) {
            return Ok(Err(error));
        }
        if current.status != Status::Confirmed {
            return Ok(Err(AppError::Conflict(format!(
                "reservation {id} is {} and can no longer be changed",
                current.status.as_str()
            ))));
        }
        let mut next = match current.patched(patch, now()) {
            Err(errors) => return Ok(Err(AppError::Validation(errors))),
            Ok(None) => return Ok(Ok(Outcome::Reservation(current, Change::Unchanged))),
            Ok(Some(next)) => next,
        };
        let moved = next.starts_at != current.starts_at || next.ends_at != current.ends_at;
        if moved || next.party_size > current.party_size {
            let Some(resource) = self.resource(current.resource_id).await? else {
                return Ok(Err(not_found("resource", current.resource_id)));
            };
            if moved && let Err(error) = check_bookable(&resource, next.starts_at, next.ends_at) {
                return Ok(Err(error));
            }
            let (start, end) = (micros(next.starts_at), micros(next.ends_at));
            // Its own current hold does not count against it.
            let holds = self.holds(resource.id, start, end, Some(id)).await?;
            if !fits(holds, start, end, next.party_size, resource.capacity) {
                return Ok(Err(full(&resource, next.party_size)));
            }
        }
        next.sync_state = self.dirty_state();
        query(
            "UPDATE reservations SET starts_at = ?2, ends_at = ?3, party_size = ?4, notes = ?5, metadata = ?6, \
             version = ?7, updated_at = ?8, sync_state = ?9 WHERE id = ?1",
        )
        .bind(id.hyphenated().to_string())
        .bind(micros(next.starts_at))
        .bind(micros(next.ends_at))
        .bind(i64::from(next.party_size))
        .bind(&next.notes)
        .bind(next.metadata.as_ref().map(|m| serde_json::Value::Object(m.clone()).to_string()))
        .bind(next.version)
        .bind(micros(next.updated_at))
        .bind(next.sync_state.as_str())
        .execute(&mut self.conn)
        .await?;
        self.enqueue(EntityKind::Reservation, id, next.version);
        self.changed(&next, &[&current]);
        Ok(Ok(Outcome::Reservation(next, Change::Updated)))
    }

    pub(super) async fn cancel_reservation(
        &mut self,
        principal: &Principal,
        id: Uuid,
        if_match: Option<&VersionMatch>,
    ) -> anyhow::Result<OpResult> {
        let Some(mut reservation) = self.owned(principal, id).await? else {
            return Ok(Err(not_found("reservation", id)));
        };
        if let Err(error) = check_version(if_match, reservation.version) {
            return Ok(Err(error));
        }
        match reservation.status {
            Status::Cancelled => {
                return Ok(Ok(Outcome::Reservation(reservation, Change::Unchanged)));
            }
            Status::Rejected => {
                return Ok(Err(AppError::Conflict(format!(
                    "reservation {id} was rejected and holds no capacity to cancel"
                ))));
            }
            Status::Confirmed => {}
        }
        reservation.status = Status::Cancelled;
        reservation.version += 1;
        reservation.updated_at = now();
        reservation.sync_state = self.dirty_state();
        query(
            "UPDATE reservations SET status = 'cancelled', version = ?2, updated_at = ?3, sync_state = ?4 WHERE id = ?1",
        )
        .bind(id.hyphenated().to_string())
        .bind(reservation.version)
        .bind(micros(reservation.updated_at))
        .bind(reservation.sync_state.as_str())
        .execute(&mut self.conn)
        .await?;
        self.enqueue(EntityKind::Reservation, id, reservation.version);
        self.changed(&reservation, &[]);
        Ok(Ok(Outcome::Reservation(reservation, Change::Updated)))
    }

    /// Notes a changed reservation for the commit hook, with the spans whose
    /// availability it affects (its own and those of `before`).
    pub(super) fn changed(&mut self, reservation: &Reservation, before: &[&Reservation]) {
        let spans = std::iter::once(reservation)
            .chain(before.iter().copied())
            .map(|r| (micros(r.starts_at), micros(r.ends_at)))
            .collect();
        self.changes.push(Changed::Reservation {
            reservation: reservation.clone(),
            spans,
        });
    }
}
