package org.cartfhir.hapi;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.autoconfigure.elasticsearch.ElasticsearchClientAutoConfiguration;
import org.springframework.boot.autoconfigure.elasticsearch.ElasticsearchRestClientAutoConfiguration;
import org.springframework.boot.autoconfigure.flyway.FlywayAutoConfiguration;
import org.springframework.boot.autoconfigure.data.jpa.JpaRepositoriesAutoConfiguration;
import org.springframework.boot.autoconfigure.orm.jpa.HibernateJpaAutoConfiguration;
import org.springframework.boot.autoconfigure.quartz.QuartzAutoConfiguration;
import org.springframework.boot.autoconfigure.thymeleaf.ThymeleafAutoConfiguration;

/**
 * cartfhir's local FHIR R4 test server: HAPI FHIR's JPA server on an in-memory H2 database.
 *
 * <p>Serves {@code http://127.0.0.1:PORT/fhir}. The port comes from {@code --hapi.port=N},
 * {@code -Dhapi.port=N} or the {@code HAPI_PORT} environment variable (default 8080).
 * Everything is lost when the process ends.
 *
 * <p>Spring Boot provides the embedded Tomcat and the H2 DataSource. Its JPA, repository and
 * Quartz auto-configuration is excluded because HAPI sets up its own EntityManagerFactory,
 * repositories and scheduler; Flyway, Thymeleaf and Elasticsearch come along in HAPI's jars
 * and are not used.
 */
@SpringBootApplication(
		exclude = {
			HibernateJpaAutoConfiguration.class,
			JpaRepositoriesAutoConfiguration.class,
			QuartzAutoConfiguration.class,
			FlywayAutoConfiguration.class,
			ThymeleafAutoConfiguration.class,
			ElasticsearchClientAutoConfiguration.class,
			ElasticsearchRestClientAutoConfiguration.class
		})
public class HapiServerApplication {

	public static void main(String[] args) {
		SpringApplication.run(HapiServerApplication.class, args);
	}
}
