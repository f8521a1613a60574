#!/usr/bin/env bash
# Packs what the GPU machine needs to run the project's GPU tests and benchmarks into the git-ignored .device/:
# a small Java runtime, every jar (main and test classes, their dependencies, JUnit's console launcher).
# Usage (repository root, after `mvn -DskipTests install`): examples/scripts/pack-device.sh [EXTRA_DIR...]
# Each EXTRA_DIR is copied to .device/<its name> (for example a Mooncake build made outside the project).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=.device
mkdir -p "$out/lib" "$out/test"
../shared/device/pack-jre.sh "$out/jre" >/dev/null
rm -f "$out"/lib/*.jar "$out"/test/*.jar
for m in api backend-local backend-nccl backend-transfer-engine examples; do
  mvn -q -pl "$m" dependency:copy-dependencies -DincludeScope=test -DoutputDirectory="$root/$out/lib" \
      -Dmdep.useBaseVersion=true
  cp "$m"/target/weightloader-*.jar "$out/lib/" 2>/dev/null || true
  cp "$m"/target/*-tests.jar "$out/test/" 2>/dev/null || true
  if [ -d "$m/target/test-classes" ]; then
    (cd "$m/target/test-classes" && jar cf "$root/$out/test/$m-test-classes.jar" .)
  fi
done
# not needed to run the tests, and large
rm -f "$out"/lib/byte-buddy-*.jar "$out"/lib/junit-jupiter-*.jar "$out"/lib/junit-platform-*[0-9].jar \
      "$out"/lib/opentest4j-*.jar "$out"/lib/apiguardian-*.jar
mvn -q dependency:copy -Dartifact=org.junit.platform:junit-platform-console-standalone:1.14.4 \
    -DoutputDirectory="$root/$out/lib"
for extra in "$@"; do
  rm -rf "$out/$(basename "$extra")"
  cp -r "$extra" "$out/$(basename "$extra")"
done
du -sh "$out"
