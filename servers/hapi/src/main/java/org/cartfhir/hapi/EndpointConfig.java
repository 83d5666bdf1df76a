package org.cartfhir.hapi;

import ca.uhn.fhir.batch2.jobs.export.BulkDataExportProvider;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.interceptor.api.IInterceptorService;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.binary.interceptor.BinaryStorageInterceptor;
import ca.uhn.fhir.jpa.provider.IJpaSystemProvider;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.narrative2.NullNarrativeGenerator;
import ca.uhn.fhir.rest.api.EncodingEnum;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.interceptor.LoggingInterceptor;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import org.springframework.boot.web.servlet.FilterRegistrationBean;
import org.springframework.boot.web.servlet.ServletRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;

/** The HTTP side: HAPI's RestfulServer at /fhir/* with the JPA providers and bulk export. */
@Configuration
public class EndpointConfig {

	@Bean
	public RestfulServer restfulServer(
			IFhirSystemDao<?, ?> systemDao,
			IJpaSystemProvider systemProvider,
			ResourceProviderFactory resourceProviders,
			JpaStorageSettings storageSettings,
			ISearchParamRegistry searchParamRegistry,
			IValidationSupport validationSupport,
			DatabaseBackedPagingProvider pagingProvider,
			BulkDataExportProvider bulkDataExportProvider,
			IInterceptorService jpaInterceptors,
			BinaryStorageInterceptor<?> binaryStorageInterceptor,
			ServerSettings settings) {
		RestfulServer server = new RestfulServer(systemDao.getContext());
		systemDao.getContext().setNarrativeGenerator(new NullNarrativeGenerator());

		server.registerProviders(resourceProviders.createProviders()); // one per resource type
		server.registerProvider(systemProvider); // transaction/batch, history, $expunge, ...
		server.registerProvider(bulkDataExportProvider); // $export, $export-poll-status

		JpaCapabilityStatementProvider capabilities = new JpaCapabilityStatementProvider(
				server, systemDao, storageSettings, searchParamRegistry, validationSupport);
		capabilities.setImplementationDescription("cartfhir test server (HAPI FHIR JPA, R4, in-memory H2)");
		server.setServerConformanceProvider(capabilities);

		pagingProvider.setDefaultPageSize(settings.getDefaultPageSize());
		pagingProvider.setMaximumPageSize(settings.getMaxPageSize());
		server.setPagingProvider(pagingProvider);

		server.setDefaultResponseEncoding(EncodingEnum.JSON);
		server.setDefaultPrettyPrint(false);

		if (settings.isRequestLog()) {
			LoggingInterceptor requestLog = new LoggingInterceptor();
			requestLog.setLoggerName("cartfhir.hapi.requests");
			requestLog.setMessageFormat(
					"${requestVerb} ${requestUrl}${requestParameters} ${operationType} ${processingTimeMillis}ms");
			requestLog.setErrorMessageFormat("ERROR ${requestVerb} ${requestUrl}${requestParameters} ${exceptionMessage}");
			requestLog.setLogExceptions(true);
			server.registerInterceptor(requestLog);
		}

		// Binary content (bulk export output files) goes to the binary storage table
		// instead of the resource body, and is inflated again on read.
		jpaInterceptors.registerInterceptor(binaryStorageInterceptor);
		return server;
	}

	@Bean
	public ServletRegistrationBean<RestfulServer> fhirServlet(RestfulServer server) {
		ServletRegistrationBean<RestfulServer> registration = new ServletRegistrationBean<>(server, "/fhir/*");
		registration.setName("fhir");
		registration.setLoadOnStartup(1);
		return registration;
	}

	@Bean
	public FilterRegistrationBean<RetryAfterFilter> retryAfterFilter(ServerSettings settings) {
		FilterRegistrationBean<RetryAfterFilter> registration =
				new FilterRegistrationBean<>(new RetryAfterFilter(settings.getBulkRetryAfterSeconds()));
		registration.addUrlPatterns("/fhir/*");
		return registration;
	}
}
