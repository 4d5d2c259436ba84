"""Registry stand-in (Distribution API v2, `app.create_app`) and the OCI image pieces
the Jenkins stand-in builds and pushes with (`oci`)."""
