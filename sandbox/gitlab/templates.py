"""Service templates seeded into the sandbox GitLab group `kepler-templates`.

Each is a tiny but plausible service: a Dockerfile and one source file. A
`kepler-sandbox.yaml` (crash, error_rate, latency_ms, build.fail, build.seconds)
committed next to them changes how the built image behaves in the sandbox.
"""

from __future__ import annotations

TEMPLATES: dict[str, dict[str, str]] = {
    "go": {
        "Dockerfile": (
            "FROM golang:1.22-alpine AS build\n"
            "WORKDIR /src\n"
            "COPY . .\n"
            "RUN go build -o /svc .\n"
            "FROM alpine:3.20\n"
            "COPY --from=build /svc /svc\n"
            "EXPOSE 8080\n"
            "LABEL org.opencontainers.image.source=\"kepler-templates/go\"\n"
            "CMD [\"/svc\"]\n"),
        "go.mod": "module example.com/svc\n\ngo 1.22\n",
        "main.go": (
            "package main\n\n"
            "import (\n\t\"fmt\"\n\t\"net/http\"\n)\n\n"
            "func main() {\n"
            "\thttp.HandleFunc(\"/healthz\", func(w http.ResponseWriter, _ *http.Request) {\n"
            "\t\tfmt.Fprintln(w, \"ok\")\n\t})\n"
            "\thttp.ListenAndServe(\":8080\", nil)\n}\n"),
        "README.md": "# Go service\n\nCreated from the Kepler `go` template.\n",
    },
    "python": {
        "Dockerfile": (
            "FROM python:3.12-slim\n"
            "WORKDIR /app\n"
            "COPY . .\n"
            "EXPOSE 8080\n"
            "LABEL org.opencontainers.image.source=\"kepler-templates/python\"\n"
            "CMD [\"python\", \"app.py\"]\n"),
        "app.py": (
            "from http.server import BaseHTTPRequestHandler, HTTPServer\n\n\n"
            "class Handler(BaseHTTPRequestHandler):\n"
            "    def do_GET(self):\n"
            "        self.send_response(200)\n"
            "        self.end_headers()\n"
            "        self.wfile.write(b\"ok\\n\")\n\n\n"
            "HTTPServer((\"\", 8080), Handler).serve_forever()\n"),
        "README.md": "# Python service\n\nCreated from the Kepler `python` template.\n",
    },
    "static": {
        "Dockerfile": (
            "FROM nginx:1.27-alpine\n"
            "COPY index.html /usr/share/nginx/html/index.html\n"
            "EXPOSE 80\n"
            "LABEL org.opencontainers.image.source=\"kepler-templates/static\"\n"),
        "index.html": "<!doctype html>\n<title>Kepler</title>\n<h1>It works</h1>\n",
        "README.md": "# Static site\n\nCreated from the Kepler `static` template.\n",
    },
}
