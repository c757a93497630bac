"""A small Flask app exercising what real apps use: routing, JSON, a multipart
upload, a streamed response and send_file."""

import io
import os

from flask import Flask, Response, jsonify, request, send_file, url_for

HERE = os.path.dirname(os.path.abspath(__file__))


def create_app():
    app = Flask(__name__)

    @app.get("/")
    def index():
        return "flask ok"

    @app.get("/user/<name>")
    def user(name):
        return jsonify(name=name, q=request.args.get("q"), url=url_for("user", name=name, _external=True))

    @app.post("/json")
    def echo_json():
        data = request.get_json()
        return jsonify(got=data, n=len(data["items"]))

    @app.post("/upload")
    def upload():
        f = request.files["file"]
        blob = f.read()
        return jsonify(filename=f.filename, size=len(blob), field=request.form["note"], sum=sum(blob) % 65536)

    @app.get("/stream")
    def stream():
        def gen():
            for i in range(4):
                yield f"part {i}\n"

        return Response(gen(), mimetype="text/plain")

    @app.get("/file")
    def file():
        return send_file(io.BytesIO(b"x" * 100_000), mimetype="application/octet-stream", download_name="x.bin")

    return app
