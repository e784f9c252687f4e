"""Operator commands: `python -m app.cli migrate | load-demo`."""

import argparse
import json
import sys
from pathlib import Path

from app.db.engine import Database
from app.db.migrations import upgrade
from app.fhir.outcome import FhirError
from app.services.ingest import process_bundle
from app.settings import ROOT, Settings


def migrate(settings: Settings) -> None:
    upgrade(settings.database_url)
    print("database migrated to head")


def load_demo(settings: Settings, directory: Path) -> int:
    """Load the demo bundles through the same ingest path a LIS uses; re-running changes nothing."""
    db = Database(settings.database_url)
    failures = 0
    files = sorted(directory.glob("*.json"))
    for path in files:
        try:
            answer = process_bundle(
                db,
                json.loads(path.read_text()),
                max_entries=settings.max_bundle_entries,
                retries=settings.write_retries,
                checks=(),
                prefer="minimal",
            )
        except FhirError as exc:
            failures += 1
            print(f"{path.name}: rejected ({exc.status}): {exc}", file=sys.stderr)
            continue
        statuses = [e["response"]["status"] for e in answer["entry"]]
        created = sum(s.startswith("201") for s in statuses)
        print(f"{path.name}: {len(statuses)} entries, {created} created")
    db.dispose()
    print(f"demo data: {len(files) - failures} of {len(files)} bundles loaded")
    return 1 if failures else 0


def register(settings: Settings, *, client_id: str, scopes: str, site: str | None, key_path: Path) -> int:
    """Register a client's public key (or make a key pair when the file does not exist yet)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    from app.services.auth import register_client

    if not key_path.exists():
        private = ec.generate_private_key(ec.SECP384R1())
        key_path.write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key_path.chmod(0o600)
        print(f"made a new ES384 key pair: {key_path} (keep it with the client, never on the server)")
    loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    public = loaded.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        jwk, alg = ECAlgorithm.to_jwk(public, as_dict=True), "ES384"
    elif isinstance(public, rsa.RSAPublicKey):
        jwk, alg = RSAAlgorithm.to_jwk(public, as_dict=True), "RS384"
    else:
        print("only EC P-384 and RSA keys are supported", file=sys.stderr)
        return 2
    jwk |= {"kid": f"{client_id}-1", "alg": alg, "use": "sig"}
    register_client(
        settings.auth_clients_file, client_id=client_id, scopes=scopes, site=site, jwks={"keys": [jwk]}
    )
    print(f"registered {client_id} (site {site or 'all'}; scopes {scopes}) in {settings.auth_clients_file}")
    print("restart mrdhub to load it; then get a token with:")
    print(
        f"  ASSERTION=$(.venv/bin/python -m app.cli assertion --client-id {client_id} --key {key_path} "
        "--aud http://127.0.0.1:8000/auth/token)"
    )
    print("  curl -s http://127.0.0.1:8000/auth/token -d grant_type=client_credentials \\")
    print("    -d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer \\")
    print(f'    -d client_assertion=$ASSERTION -d scope="{scopes}"')
    return 0


def assertion(*, client_id: str, key_path: Path, audience: str) -> int:
    """Print a signed client assertion (valid 5 minutes, single use) for the token endpoint."""
    import datetime as dt
    import uuid

    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    alg = "ES384" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS384"
    now = dt.datetime.now(dt.UTC)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "exp": now + dt.timedelta(minutes=5),
        "jti": uuid.uuid4().hex,
    }
    print(jwt.encode(claims, key, algorithm=alg, headers={"kid": f"{client_id}-1"}))  # type: ignore[arg-type]
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mrdhub")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="upgrade the database to the latest schema")
    demo = commands.add_parser("load-demo", help="load the demo bundles (idempotent)")
    demo.add_argument("--dir", type=Path, default=ROOT / "demo" / "bundles")
    client = commands.add_parser("register-client", help="register a client's key (makes the key if missing)")
    client.add_argument("--client-id", required=True)
    client.add_argument("--scopes", required=True, help='e.g. "system/Patient.c system/Observation.c"')
    client.add_argument("--site", default=None, help="site code; omit for the trial office (all sites)")
    client.add_argument(
        "--key", type=Path, required=True, help="the client's private key PEM (made if missing)"
    )
    signed = commands.add_parser("assertion", help="print a client assertion JWT for the token endpoint")
    signed.add_argument("--client-id", required=True)
    signed.add_argument("--key", type=Path, required=True)
    signed.add_argument("--aud", required=True, help="the token endpoint URL")
    args = parser.parse_args(argv)
    settings = Settings()
    if args.command == "migrate":
        migrate(settings)
        return 0
    if args.command == "register-client":
        return register(
            settings, client_id=args.client_id, scopes=args.scopes, site=args.site, key_path=args.key
        )
    if args.command == "assertion":
        return assertion(client_id=args.client_id, key_path=args.key, audience=args.aud)
    return load_demo(settings, args.dir)


if __name__ == "__main__":
    sys.exit(main())
