package org.cartfhir.hapi;

import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.batch2.maintenance.JobMaintenanceServiceImpl;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.binstore.DatabaseBinaryContentStorageSvcImpl;
import ca.uhn.fhir.jpa.config.HapiJpaConfig;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import ca.uhn.fhir.rest.api.SearchTotalModeEnum;
import jakarta.persistence.EntityManagerFactory;
import java.util.HashMap;
import java.util.Map;
import javax.sql.DataSource;
import org.springframework.beans.factory.ObjectProvider;
import org.springframework.beans.factory.config.BeanPostProcessor;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.boot.context.properties.EnableConfigurationProperties;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;

/**
 * The storage side: HAPI's R4 JPA configuration, the batch2 job framework with its job
 * definitions (bulk export among them), Hibernate on the H2 DataSource, and the settings
 * that make this a convenient test server.
 */
@Configuration
@EnableConfigurationProperties(ServerSettings.class)
@Import({
	JpaR4Config.class, // DAOs, resource providers, search, transactions (imports JpaConfig)
	HapiJpaConfig.class, // paging provider, stale-search cleanup, resource counts
	JpaBatch2Config.class, // batch2 persistence and maintenance
	Batch2JobsConfig.class, // job definitions: bulk export, reindex, delete-expunge, ...
	SubscriptionChannelConfig.class, // the in-process message broker batch2 sends work chunks through
	ThreadPoolFactoryConfig.class
})
public class StorageConfig {

	@Bean
	public JpaStorageSettings jpaStorageSettings() {
		JpaStorageSettings settings = new JpaStorageSettings();
		// cartfhir's ids are UUID strings; accept any client-assigned id (even all digits)
		settings.setResourceClientIdStrategy(JpaStorageSettings.ClientIdStrategyEnum.ANY);
		settings.setResourceServerIdStrategy(JpaStorageSettings.IdStrategyEnum.UUID);
		// hospital data references things the server may not hold; never invent placeholders
		settings.setEnforceReferentialIntegrityOnWrite(false);
		settings.setAutoCreatePlaceholderReferenceTargets(false);
		settings.setAllowExternalReferences(true);
		// every search answers with Bundle.total; no cached search results reused between requests
		settings.setDefaultTotalMode(SearchTotalModeEnum.ACCURATE);
		settings.setReuseCachedSearchResultsForMillis(null);
		// tests may wipe the server between cases ($expunge, _expunge on delete, multiple deletes)
		settings.setExpungeEnabled(true);
		settings.setDeleteExpungeEnabled(true);
		settings.setAllowMultipleDelete(true);
		// batch2: a gated job step that made a single chunk moves on at once
		settings.setJobFastTrackingEnabled(true);
		settings.setEnableTaskBulkExportJobExecution(true);
		settings.setBulkExportFileRetentionPeriodHours(2);
		return settings;
	}

	@Bean
	public PartitionSettings partitionSettings() {
		return new PartitionSettings(); // no partitioning
	}

	@Bean
	public SubscriptionSettings subscriptionSettings() {
		return new SubscriptionSettings(); // no subscription channel types: subscriptions are off
	}

	@Primary
	@Bean
	public LocalContainerEntityManagerFactoryBean entityManagerFactory(
			ConfigurableListableBeanFactory beanFactory,
			FhirContext fhirContext,
			JpaStorageSettings storageSettings,
			DataSource dataSource) {
		LocalContainerEntityManagerFactoryBean factory =
				HapiEntityManagerFactoryUtil.newEntityManagerFactory(beanFactory, fhirContext, storageSettings);
		factory.setPersistenceUnitName("CARTFHIR_HAPI");
		factory.setDataSource(dataSource);
		Map<String, Object> properties = new HashMap<>();
		properties.put("hibernate.dialect", HapiFhirH2Dialect.class.getName());
		properties.put("hibernate.hbm2ddl.auto", "update");
		properties.put("hibernate.format_sql", "false");
		properties.put("hibernate.show_sql", "false");
		properties.put("hibernate.jdbc.batch_size", "20");
		properties.put("hibernate.cache.use_query_cache", "false");
		properties.put("hibernate.cache.use_second_level_cache", "false");
		properties.put("hibernate.cache.use_structured_entries", "false");
		properties.put("hibernate.cache.use_minimal_puts", "false");
		properties.put("hibernate.archive.scanner", "org.hibernate.boot.archive.scan.internal.DisabledScanner");
		// no full-text indexing (Hibernate Search / Lucene) and no Envers auditing
		properties.put("hibernate.search.enabled", "false");
		properties.put("hibernate.integration.envers.enabled", "false");
		factory.setJpaPropertyMap(properties);
		return factory;
	}

	@Primary
	@Bean
	public JpaTransactionManager transactionManager(EntityManagerFactory entityManagerFactory) {
		JpaTransactionManager manager = new JpaTransactionManager();
		manager.setEntityManagerFactory(entityManagerFactory);
		return manager;
	}

	/** Attachment and bulk export file content lives in its own database table. */
	@Bean
	public DatabaseBinaryContentStorageSvcImpl binaryStorageSvc() {
		return new DatabaseBinaryContentStorageSvcImpl();
	}

	/**
	 * HAPI schedules batch2 maintenance once a minute; a bulk export needs a few passes, so
	 * shorten the interval before the scheduler picks it up (at context refresh).
	 */
	@Bean
	public static BeanPostProcessor batchMaintenanceInterval(ObjectProvider<ServerSettings> settings) {
		return new BeanPostProcessor() {
			@Override
			public Object postProcessAfterInitialization(Object bean, String beanName) {
				if (bean instanceof JobMaintenanceServiceImpl maintenance) {
					maintenance.setScheduledJobFrequencyMillis(
							settings.getObject().getBatchMaintenanceIntervalMs());
				}
				return bean;
			}
		};
	}
}
