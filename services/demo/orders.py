"""The bundled demo task: extract a customer order from a free-text message as JSON.

A base instruct model answers in prose or malformed JSON, so exact match starts
near zero and a short LoRA run lifts it measurably. Rows are generated from a
seed so the file is reproducible: ``python -m services.demo.orders > orders.jsonl``.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

DATASET_PATH = Path(__file__).parent / "data" / "orders.jsonl"
INSTRUCTION = 'Extract the order as JSON with keys "name", "qty", "item", "city".'

FIRST = [
    "Priya",
    "Tomas",
    "Aiko",
    "Lena",
    "Omar",
    "Chloe",
    "Mateo",
    "Ingrid",
    "Kwame",
    "Sofia",
    "Ravi",
    "Hannah",
    "Diego",
    "Mei",
    "Yusuf",
    "Clara",
    "Jonas",
    "Amara",
    "Felix",
    "Nadia",
    "Oscar",
    "Elif",
    "Hugo",
    "Zara",
]
LAST = [
    "Natarajan",
    "Novak",
    "Tanaka",
    "Berg",
    "Haddad",
    "Martin",
    "Silva",
    "Larsen",
    "Mensah",
    "Rossi",
    "Patel",
    "Weber",
    "Torres",
    "Chen",
    "Demir",
    "Fischer",
    "Koch",
    "Okafor",
    "Wagner",
    "Ivanova",
    "Lind",
    "Kaya",
    "Moreau",
    "Ali",
]
ITEMS = [
    "blue mugs",
    "desk lamps",
    "notebooks",
    "wool scarves",
    "coffee grinders",
    "yoga mats",
    "phone cases",
    "water bottles",
    "tea kettles",
    "bike lights",
    "backpacks",
    "candles",
    "headphones",
    "plant pots",
    "umbrellas",
    "socks",
]
CITIES = [
    "Leeds",
    "Lisbon",
    "Osaka",
    "Bergen",
    "Austin",
    "Lyon",
    "Porto",
    "Accra",
    "Turin",
    "Pune",
    "Graz",
    "Cusco",
    "Dublin",
    "Izmir",
    "Quebec",
    "Malmo",
]
TEMPLATES = [
    "Hi, this is {name}. Please send {qty} {item} to {city}.",
    "{name} here - I'd like {qty} {item} delivered to {city}, thanks!",
    "Order for {name}: {qty} x {item}, ship to {city}.",
    "Could you ship {qty} {item} to {city}? Name: {name}.",
    "Hello! {name} from {city} wants to order {qty} {item}.",
    "Please deliver {qty} {item} to {name} in {city}.",
    "New order - customer {name}, city {city}, {qty} {item}.",
    "I need {qty} {item} sent to {city}. Regards, {name}",
]


def make_rows(count: int = 320, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        order = {
            "name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
            "qty": rng.randint(1, 12),
            "item": rng.choice(ITEMS),
            "city": rng.choice(CITIES),
        }
        message = rng.choice(TEMPLATES).format(**order)
        rows.append(
            {"instruction": INSTRUCTION, "input": message, "output": json.dumps(order)}
        )
    return rows


if __name__ == "__main__":
    for row in make_rows():
        sys.stdout.write(json.dumps(row) + "\n")
