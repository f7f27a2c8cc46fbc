"""What the HTTP edges (the API in broker.http and the dashboard) share: the error middleware and
request id, list cursors, security headers, the access log, slow-client guards and the server
that answers unreadable requests without echoing them."""
