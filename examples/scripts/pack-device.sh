#!/usr/bin/env bash
# Packs what a GPU machine without Java, Maven or network needs into the git-ignored .device/, so that the GPU
# runs drive the distribution that ships:
#   .device/weightloader/        the distribution (examples/target/weightloader: bin/ lib/ mooncake/ scripts/)
#   .device/weightloader/jre/    a small Java runtime, which the launcher uses when present
#   .device/weightloader/mooncake/  the Mooncake bundle given with --mooncake (build-mooncake.sh --cuda output)
#   .device/test/                the GPU tests' classes and the test-only jars (JUnit's console launcher, AssertJ);
#                                the backends they test come from the distribution's lib/
# Usage (repository root, after `mvn -DskipTests install`): examples/scripts/pack-device.sh [--mooncake DIR] [--no-etcd]
#   --no-etcd   leave the etcd registry (weightloader-registry-etcd, jetcd, gRPC, Netty, Vert.x, Guava, protobuf: ~17 MB)
#               out of the device's lib/: the device tool carries at most 64 MiB, and the GPU tests and benches do
#               not use a registry
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
mooncake=""
no_etcd=false
while [ $# -gt 0 ]; do
  case "$1" in
    --mooncake) mooncake=${2:?--mooncake DIR}; shift 2 ;;
    --no-etcd) no_etcd=true; shift ;;
    *) echo "usage: $0 [--mooncake DIR] [--no-etcd]" >&2; exit 2 ;;
  esac
done
dist=examples/target/weightloader
[ -x "$dist/bin/weightloader" ] || { echo "no distribution in $dist: run mvn -DskipTests install first" >&2; exit 1; }
out=.device
rm -rf "$out/weightloader" "$out/test"
mkdir -p "$out/test"
cp -r "$dist" "$out/weightloader"
if $no_etcd; then
  # the jars only weightloader-registry-etcd brings (the distribution before it had none of them)
  for p in weightloader-registry-etcd jetcd- grpc- netty- vertx- guava- failureaccess- listenablefuture- \
      proto-google-common-protos- protobuf-java- perfmark-api- javax.annotation-api- jspecify- failsafe-; do
    rm -f "$out/weightloader/lib/$p"*.jar
  done
fi
../shared/device/pack-jre.sh "$out/weightloader/jre" >/dev/null
if [ -n "$mooncake" ]; then
  cp -r "$mooncake"/. "$out/weightloader/mooncake/"
fi
# test classes, and the test-scoped jars the distribution does not carry
for m in api/spi api/memory api/seed api/host api/host-tests backend-local backend-nccl backend-transfer-engine examples; do
  if [ -d "$m/target/test-classes" ]; then
    (cd "$m/target/test-classes" && jar cf "$root/$out/test/${m//\//-}-test-classes.jar" .)
  fi
done
tmp=$(mktemp -d)
mvn -q -pl api/seed dependency:copy-dependencies -DincludeScope=test -DoutputDirectory="$tmp" -Dmdep.useBaseVersion=true
cp "$tmp"/assertj-core-*.jar "$out/test/"
rm -rf "$tmp"
mvn -q dependency:copy -Dartifact=org.junit.platform:junit-platform-console-standalone:1.14.4 \
    -DoutputDirectory="$root/$out/test"
du -sh "$out"/*
