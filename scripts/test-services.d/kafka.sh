# Apache Kafka, the broker our users run, for the integration tests: its jars and their runtime
# dependencies from Maven Central (scripts/apache-kafka/pom.xml) into a cache directory, Java 17
# and Maven from Debian if missing. Sourced by scripts/test-services, which defines apt_install.
# Quick once the jars are there. The tests start their own single-node KRaft broker from them
# (tests/apache_kafka.py); TEST_KAFKA_LIBS tells them where they are.
_kafka_version=$(sed -n 's:.*<version>\(4\.[^<]*\)</version>.*:\1:p' scripts/apache-kafka/pom.xml)
_kafka_libs="${XDG_CACHE_HOME:-$HOME/.cache}/telemon/apache-kafka-$_kafka_version"
if [ ! -f "$_kafka_libs/.complete" ]; then
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  command -v mvn >/dev/null || apt_install maven
  echo "fetching Apache Kafka $_kafka_version into $_kafka_libs"
  mvn -q -B -Dstyle.color=never -f scripts/apache-kafka/pom.xml dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$_kafka_libs"
  touch "$_kafka_libs/.complete"
fi
export TEST_KAFKA_LIBS="$_kafka_libs"
unset _kafka_version _kafka_libs
