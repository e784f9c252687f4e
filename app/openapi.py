"""Print the app's OpenAPI document, or check that the committed one is in step (`--check FILE`)."""

import json
import sys

from app.main import create_app
from app.settings import Settings


def document() -> str:
    app = create_app(Settings(database_url="sqlite://"))
    return json.dumps(app.openapi(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--check":
        with open(argv[1], encoding="utf-8") as handle:
            committed = handle.read()
        if committed != document():
            print(f"{argv[1]} is out of step with the code: run `make openapi`", file=sys.stderr)
            return 1
        print(f"{argv[1]} is in step with the code")
        return 0
    sys.stdout.write(document())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
