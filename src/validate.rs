//! Validation: an [`Epoch`](crate::gnss::epoch::Epoch) becomes an accepted
//! [`Fix`](crate::fix::Fix) or a [`Rejection`](crate::rejection::Rejection) with a reason.
