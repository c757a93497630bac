"""A small Flask app for bench/run: routing, a query argument, a JSON response."""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.route("/")
def index():
    name = request.args.get("name", "world")
    return jsonify(greeting=f"Hello, {name}!", items=[1, 2, 3], ok=True)


@app.route("/user/<int:user_id>")
def user(user_id):
    return jsonify(id=user_id, name=f"user{user_id}")
