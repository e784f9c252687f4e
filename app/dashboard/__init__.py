"""The trial office's dashboard (issue 9): server-rendered pages over the same services as the JSON API."""
