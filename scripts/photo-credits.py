#!/usr/bin/env python3
"""Writes the credits of the photos the default weights were trained on (weights/PHOTO_CREDITS.csv):
every source photo of the distillation set's training part, with its licence line from the shared
photo manifests. Usage: photo-credits.py SHARED_DATA_DIR OUT.csv"""
import csv
import os
import sys

shared, out = sys.argv[1], sys.argv[2]
with open(os.path.join(shared, "distill", "variants.csv"), newline="") as f:
    train_photos = sorted({row["source_photo"] for row in csv.DictReader(f) if row["part"] == "train"})

licences = {}
for name, licence_column, source_column in [
    ("MANIFEST.csv", "license_attribution", "source_package"),
    ("MANIFEST_more.csv", "licence", "source"),
]:
    with open(os.path.join(shared, "photos", name), newline="") as f:
        for row in csv.DictReader(f):
            licences.setdefault(os.path.basename(row["file"]), (row["file"], row[source_column], row[licence_column]))

missing = [p for p in train_photos if p not in licences]
if missing:
    sys.exit(f"no manifest entry for {len(missing)} training photos, e.g. {missing[:3]}")
with open(out, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["photo", "manifest_file", "source", "licence_attribution"])
    for photo in train_photos:
        writer.writerow([photo, *licences[photo]])
print(f"{out}: {len(train_photos)} training photos credited")
