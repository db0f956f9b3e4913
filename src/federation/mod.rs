//! Server-Server API. Not served yet: this server does not federate so far (see README).
